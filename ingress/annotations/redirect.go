package annotations

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

func parseRedirects(ps *parser, p *Policy, _ Defaults) {
	p.SSLRedirect = ps.boolOpt("ssl-redirect", true)
	p.ForceSSLRedirect = ps.boolOpt("force-ssl-redirect", false)
	p.FromToWWWRedirect = ps.boolOpt("from-to-www-redirect", false)
	if v, ok := ps.get("app-root"); ok {
		if err := checkAppRoot(v); err != nil {
			ps.invalid("app-root", err, "no redirect from /")
		} else {
			p.AppRoot = v
		}
	}
	code := http.StatusMovedPermanently
	if v, ok := ps.get("permanent-redirect-code"); ok {
		n, err := parseInt(v, 300, 308)
		if err != nil {
			ps.invalid("permanent-redirect-code", err, "using 301")
		} else {
			code = n
		}
	}
	// ingress-nginx lets temporal-redirect win when both are set.
	for _, r := range []struct {
		name string
		code int
	}{{"temporal-redirect", http.StatusFound}, {"permanent-redirect", code}} {
		v, ok := ps.get(r.name)
		if !ok {
			continue
		}
		if err := checkRedirectURL(v); err != nil {
			ps.invalid(r.name, err, "requests are proxied instead of redirected")
			continue
		}
		if p.Redirect == nil {
			p.Redirect = &Redirect{URL: v, Code: r.code}
		}
	}
}

func checkAppRoot(v string) error {
	if !strings.HasPrefix(v, "/") || strings.HasPrefix(v, "//") {
		return fmt.Errorf("app-root %q must be a path starting with a single /", v)
	}
	u, err := url.Parse(v)
	if err != nil || u.Scheme != "" || u.Host != "" {
		return fmt.Errorf("app-root %q is not a path", v)
	}
	if strings.ContainsAny(v, " \t\r\n$") {
		return fmt.Errorf("app-root %q contains spaces or variables", v)
	}
	return nil
}

// checkRedirectURL wants an absolute http(s) URL once its variables are expanded, as ingress-nginx does.
func checkRedirectURL(v string) error {
	s, err := expandCheck(v)
	if err != nil {
		return err
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %w", v, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("%q is not an absolute http or https URL", v)
	}
	return nil
}

// Vars are the request values the nginx variables in URL annotations stand for.
type Vars struct {
	Scheme     string // http or https
	Host       string // the Host header without port ($host)
	RequestURI string // the original path and query ($request_uri)
}

// vars are the nginx variables baregate expands in auth-url, auth-signin and redirect URLs, longest
// first so that $request_uri does not shadow $escaped_request_uri.
var vars = []string{"$escaped_request_uri", "$request_uri", "$scheme", "$host", "$http_host"}

// Expand replaces the supported nginx variables of tmpl. $escaped_request_uri is query-escaped, for
// use as a parameter (oauth2-proxy's rd=).
func Expand(tmpl string, v Vars) string {
	if !strings.Contains(tmpl, "$") {
		return tmpl
	}
	var b strings.Builder
	for i := 0; i < len(tmpl); i++ {
		if tmpl[i] == '$' {
			if name := varAt(tmpl[i:]); name != "" {
				switch name {
				case "$escaped_request_uri":
					b.WriteString(url.QueryEscape(v.RequestURI))
				case "$request_uri":
					b.WriteString(v.RequestURI)
				case "$scheme":
					b.WriteString(v.Scheme)
				case "$host", "$http_host":
					b.WriteString(v.Host)
				}
				i += len(name) - 1
				continue
			}
		}
		b.WriteByte(tmpl[i])
	}
	return b.String()
}

func varAt(s string) string {
	for _, name := range vars {
		if strings.HasPrefix(s, name) && (len(s) == len(name) || !isVarChar(s[len(name)])) {
			return name
		}
	}
	return ""
}

func isVarChar(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// expandCheck expands tmpl with sample values, failing on any "$" that is not a supported variable,
// since nginx would have expanded it and baregate would send it literally.
func expandCheck(tmpl string) (string, error) {
	for i := 0; i < len(tmpl); i++ {
		if tmpl[i] == '$' && varAt(tmpl[i:]) == "" {
			return "", fmt.Errorf("%q uses an nginx variable baregate does not support (only %s)", tmpl, strings.Join(vars, ", "))
		}
	}
	if strings.ContainsAny(tmpl, " \t\r\n") {
		return "", errors.New("URL contains white space")
	}
	return Expand(tmpl, Vars{Scheme: "https", Host: "example.com", RequestURI: "/path?q=1"}), nil
}

// RedirectFor is the redirect, if any, that answers a request instead of proxying it, in nginx's
// order: app-root for "/", then permanent-redirect / temporal-redirect, then the redirect to HTTPS
// (for plain HTTP when the host has a certificate and ssl-redirect is on, or always with
// force-ssl-redirect). path is the request's URL path; hostHasTLS says whether a certificate covers
// the request's host. code is 0 when the request is to be proxied.
func (p *Policy) RedirectFor(v Vars, path string, hostHasTLS bool) (location string, code int) {
	if p.AppRoot != "" && path == "/" {
		return v.Scheme + "://" + v.Host + p.AppRoot, http.StatusFound
	}
	if p.Redirect != nil {
		return Expand(p.Redirect.URL, v), p.Redirect.Code
	}
	if v.Scheme == "http" && (p.ForceSSLRedirect || p.SSLRedirect && hostHasTLS) {
		return "https://" + v.Host + v.RequestURI, http.StatusPermanentRedirect
	}
	return "", 0
}
