package annotations

import (
	"fmt"
	"net/http"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
)

// ForwardAuth is auth-url: each request is first sent to URL (method Method, original headers); a
// 2xx lets it through with ResponseHeaders copied from the auth answer onto the proxied request, 401
// and 403 are answered (401 redirects to Signin when set), anything else is 500.
type ForwardAuth struct {
	URL             string // may contain the variables of Expand
	Method          string // default GET
	Signin          string // may contain the variables of Expand; "" to answer 401 as is
	RedirectParam   string // query parameter that carries the original URL to Signin (default rd)
	ResponseHeaders []string
}

func parseForwardAuth(ps *parser, p *Policy, _ Defaults) {
	v, ok := ps.get("auth-url")
	if !ok {
		return
	}
	if err := checkRedirectURL(v); err != nil {
		ps.invalid("auth-url", err, "every request is refused until it is fixed")
		p.Denied = "invalid auth-url"
		return
	}
	a := &ForwardAuth{URL: v, Method: http.MethodGet, RedirectParam: "rd"}
	if v, ok := ps.get("auth-method"); ok {
		if m := strings.ToUpper(v); isToken(m) {
			a.Method = m
		} else {
			ps.invalid("auth-method", fmt.Errorf("%q is not an HTTP method", v), "using GET")
		}
	}
	if v, ok := ps.get("auth-signin"); ok {
		if err := checkRedirectURL(v); err != nil {
			ps.invalid("auth-signin", err, "unauthenticated requests get 401 without a redirect")
		} else {
			a.Signin = v
		}
	}
	if v, ok := ps.get("auth-signin-redirect-param"); ok {
		if isToken(v) {
			a.RedirectParam = v
		} else {
			ps.invalid("auth-signin-redirect-param", fmt.Errorf("%q is not a parameter name", v), "using rd")
		}
	}
	if v, ok := ps.get("auth-response-headers"); ok {
		for _, h := range splitList(v) {
			if !isToken(h) {
				ps.invalid("auth-response-headers", fmt.Errorf("%q is not a header name", h), "this header is not copied")
				continue
			}
			a.ResponseHeaders = append(a.ResponseHeaders, http.CanonicalHeaderKey(h))
		}
	}
	p.ForwardAuth = a
}

// SigninURL is where a request that auth-url refused with 401 is redirected to (Signin with its
// variables filled in and the original URL in RedirectParam unless Signin sets that parameter itself),
// or "" when there is no Signin.
func (a *ForwardAuth) SigninURL(v Vars) string {
	if a.Signin == "" {
		return ""
	}
	s := Expand(a.Signin, v)
	if strings.Contains(a.Signin, "?"+a.RedirectParam+"=") || strings.Contains(a.Signin, "&"+a.RedirectParam+"=") {
		return s
	}
	sep := "?"
	if strings.Contains(s, "?") {
		sep = "&"
	}
	return s + sep + a.RedirectParam + "=" + Expand("$escaped_request_uri", Vars{RequestURI: v.Scheme + "://" + v.Host + v.RequestURI})
}

// BasicAuth is auth-type: basic with its htpasswd Secret.
type BasicAuth struct {
	Realm  string
	Secret types.NamespacedName
	users  map[string]Hash
}

func parseBasicAuth(ps *parser, p *Policy, _ Defaults) {
	t, ok := ps.get("auth-type")
	if !ok {
		return
	}
	if t != "basic" {
		ps.invalid("auth-type", fmt.Errorf("%q is not supported (only basic)", t), "every request is refused until it is fixed")
		p.Denied = "unsupported auth-type"
		return
	}
	a, err := ps.basicAuth()
	if err != nil {
		name := "auth-secret"
		if _, ok := ps.get(name); !ok {
			name = "auth-type"
		}
		ps.invalid(name, err, "every request is refused until it is fixed")
		p.Denied = "basic auth not usable"
		return
	}
	p.BasicAuth = a
}

func (ps *parser) basicAuth() (*BasicAuth, error) {
	a := &BasicAuth{Realm: "Authentication Required"}
	if v, ok := ps.get("auth-realm"); ok {
		if strings.ContainsAny(v, "\"\\\r\n") {
			ps.invalid("auth-realm", fmt.Errorf("%q contains quotes, backslashes or line breaks", v), "using the default realm")
		} else {
			a.Realm = v
		}
	}
	name, ok := ps.get("auth-secret")
	if !ok || name == "" {
		return nil, fmt.Errorf("auth-type basic needs auth-secret")
	}
	a.Secret = types.NamespacedName{Namespace: ps.ing.Namespace, Name: name}
	if ns, n, ok := strings.Cut(name, "/"); ok {
		if ns != ps.ing.Namespace {
			return nil, fmt.Errorf("auth-secret %q is in another namespace, which baregate does not allow", name)
		}
		a.Secret.Name = n
	}
	var sec *corev1.Secret
	if ps.secrets != nil {
		sec = ps.secrets(a.Secret)
	}
	if sec == nil {
		return nil, fmt.Errorf("secret %s not found", a.Secret)
	}
	kind := "auth-file"
	if v, ok := ps.get("auth-secret-type"); ok {
		if v != "auth-file" && v != "auth-map" {
			return nil, fmt.Errorf("auth-secret-type %q is neither auth-file nor auth-map", v)
		}
		kind = v
	}
	var bad []string
	if kind == "auth-file" {
		file, ok := sec.Data["auth"]
		if !ok {
			return nil, fmt.Errorf("secret %s has no key \"auth\"", a.Secret)
		}
		a.users, bad = ParseHtpasswd(string(file))
	} else {
		a.users = map[string]Hash{}
		for user, hash := range sec.Data {
			if h, err := ParseHash(strings.TrimSpace(string(hash))); err != nil || user == "" {
				bad = append(bad, fmt.Sprintf("user %q: %v", user, err))
			} else {
				a.users[user] = h
			}
		}
	}
	for _, b := range bad {
		ps.problem("auth-secret", "InvalidHtpasswd", "Secret %s: %s; that user cannot log in", a.Secret, b)
	}
	if len(a.users) == 0 {
		return nil, fmt.Errorf("secret %s has no usable users", a.Secret)
	}
	return a, nil
}

// Challenge is the WWW-Authenticate value sent with 401.
func (a *BasicAuth) Challenge() string { return `Basic realm="` + a.Realm + `"` }

// Check reports whether the request's Authorization header names a user of the Secret with the
// right password. bcrypt is slow by design; the proxy should cache successes briefly.
func (a *BasicAuth) Check(h http.Header) (user string, ok bool) {
	u, pw, ok := (&http.Request{Header: h}).BasicAuth()
	if !ok {
		return "", false
	}
	hash, ok := a.users[u]
	if !ok {
		return "", false
	}
	return u, hash.Verify(pw)
}

// Users is the number of users that can log in.
func (a *BasicAuth) Users() int { return len(a.users) }

// SecretRefs are the Secrets the annotations of ing read (the basic-auth Secret), so that the cluster
// snapshot can include them next to the TLS Secrets. A reference into another namespace is left out:
// Parse refuses it anyway, and the gateway should not watch it on the Ingress author's behalf.
func SecretRefs(ing *networkingv1.Ingress) []types.NamespacedName {
	ps := &parser{ing: ing}
	if t, _ := ps.get("auth-type"); t != "basic" {
		return nil
	}
	name, ok := ps.get("auth-secret")
	if !ok || name == "" {
		return nil
	}
	if ns, n, ok := strings.Cut(name, "/"); ok {
		if ns != ing.Namespace || n == "" {
			return nil
		}
		name = n
	}
	return []types.NamespacedName{{Namespace: ing.Namespace, Name: name}}
}
