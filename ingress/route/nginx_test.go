package route

import (
	"slices"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/baregate/baregate/ingress/annotations"
	fx "github.com/baregate/baregate/ingress/internal/fixture"
)

func withAnn(ing *networkingv1.Ingress, kv ...string) *networkingv1.Ingress {
	ing.Annotations = map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		ing.Annotations[annotations.NginxPrefix+kv[i]] = kv[i+1]
	}
	return ing
}

func reasons(ps []Problem, ingress string) []string {
	var out []string
	for _, p := range ps {
		if p.Ingress.Name == ingress {
			out = append(out, p.Reason)
		}
	}
	return out
}

// TestRegexHostOrder: once an Ingress of a host uses regular expressions, every non-Exact path of
// the host is one (case-insensitive, anchored at the start), tried longest first; Exact paths still
// win first, and other hosts keep Ingress-spec matching.
func TestRegexHostOrder(t *testing.T) {
	re := withAnn(fx.Ingress("re", 2,
		fx.Rule("a.example", fx.Path("ImplementationSpecific", "/api/v[0-9]+/(.*)", fx.Backend("v", 80)), fx.Path("ImplementationSpecific", "/api(/|$)(.*)", fx.Backend("api", 80)))),
		"use-regex", "true")
	lit := fx.Ingress("lit", 1, fx.Rule("a.example", fx.Path("Prefix", "/static", fx.Backend("static", 80)), fx.Path("Exact", "/api/health", fx.Backend("health", 80))),
		fx.Rule("b.example", fx.Path("Prefix", "/static", fx.Backend("static", 80))))
	tab, probs := Build(served(re, lit))
	if len(probs) != 0 {
		t.Fatalf("problems %v", probs)
	}
	for _, c := range []struct{ host, path, want string }{
		{"a.example", "/api/health", "health"},
		{"a.example", "/api/v2/users", "v"},
		{"a.example", "/API/V2/users", "v"},
		{"a.example", "/api/users", "api"},
		{"a.example", "/api", "api"},
		{"a.example", "/apix", "404"}, // (/|$) must follow
		{"a.example", "/STATIC/app.js", "static"},
		{"a.example", "/staticfiles", "static"}, // a regular-expression prefix is a string prefix
		{"a.example", "/other", "404"},
		{"b.example", "/staticfiles", "404"}, // element-wise Prefix on a host without regular expressions
		{"b.example", "/static/x", "static"},
	} {
		if got := serviceOf(tab.Match(c.host, c.path)); got != c.want {
			t.Errorf("%s%s -> %s, want %s", c.host, c.path, got, c.want)
		}
	}
}

// TestCanaryPairing: a canary Ingress attaches to the route of the main Ingress with the same host
// and path, whatever the order of creation; it never matches by itself.
func TestCanaryPairing(t *testing.T) {
	canary := withAnn(fx.Ingress("canary", 5, fx.Rule("a.example", fx.Path("Prefix", "/", fx.Backend("new", 80)), fx.Path("Prefix", "/only-canary", fx.Backend("new", 80)))),
		"canary", "true", "canary-weight", "10")
	second := withAnn(fx.Ingress("second", 4, fx.Rule("a.example", fx.Path("Prefix", "/", fx.Backend("newer", 80)))), "canary", "true")
	main := fx.Ingress("main", 1, fx.Rule("a.example", fx.Path("Prefix", "/", fx.Backend("old", 80))))
	tab, probs := Build(served(canary, second, main))
	r := tab.Match("a.example", "/x")
	if serviceOf(r) != "old" || r.Canary == nil || r.Canary.Backend.Service.Name != "new" || r.Canary.Policy.Nginx.Canary.Weight != 10 {
		t.Fatalf("route %+v", r)
	}
	if got := serviceOf(tab.Match("a.example", "/only-canary")); got != "old" {
		t.Errorf("a canary-only path matched %s", got)
	}
	if got := reasons(probs, "canary"); !slices.Equal(got, []string{"CanaryWithoutMainIngress"}) {
		t.Errorf("canary problems %v", got)
	}
	if got := reasons(probs, "second"); !slices.Equal(got, []string{"CanaryConflict"}) {
		t.Errorf("second canary problems %v", got)
	}
	if got := reasons(probs, "main"); len(got) != 0 {
		t.Errorf("main problems %v", got)
	}
}

// TestServerAliases: an alias serves the rules of its Ingress's first host; a name that is another
// Ingress's rule host keeps its own rules and the alias is reported.
func TestServerAliases(t *testing.T) {
	a := withAnn(fx.Ingress("a", 2, fx.Rule("a.example", fx.Path("Prefix", "/", fx.Backend("a", 80)))), "server-alias", "alias.example,*.wild.example, b.example")
	b := fx.Ingress("b", 1, fx.Rule("b.example", fx.Path("Prefix", "/", fx.Backend("b", 80))))
	www := withAnn(fx.Ingress("www", 0, fx.Rule("c.example", fx.Path("Prefix", "/", fx.Backend("c", 80)))), "from-to-www-redirect", "true")
	tab, probs := Build(served(a, b, www))
	for host, want := range map[string]string{"alias.example": "a", "x.wild.example": "a", "b.example": "b", "www.c.example": "c"} {
		if got := serviceOf(tab.Match(host, "/")); got != want {
			t.Errorf("%s -> %s, want %s", host, got, want)
		}
	}
	if got := reasons(probs, "a"); !slices.Equal(got, []string{"ServerAliasConflict"}) {
		t.Errorf("problems %v", got)
	}
}

// TestPolicyResolution: plain Ingresses take the proxy's inline path; timeouts count only when
// written; default-backend and an auth-url naming a cluster Service resolve to backends; annotation
// problems land on their Ingress only.
func TestPolicyResolution(t *testing.T) {
	plain := fx.Ingress("plain", 3, fx.Rule("p.example", fx.Path("Prefix", "/", fx.Backend("web", 80))))
	timed := withAnn(fx.Ingress("timed", 2, fx.Rule("t.example", fx.Path("Prefix", "/", fx.Backend("web", 80)))),
		"proxy-read-timeout", "5", "default-backend", "errors", "auth-url", "http://auth.default.svc.cluster.local/check")
	bad := withAnn(fx.Ingress("bad", 1, fx.Rule("b.example", fx.Path("Prefix", "/", fx.Backend("web", 80)))), "proxy-connect-timeout", "soon")
	errs := fx.Ingress("errs", 0, fx.Rule("e.example", fx.Path("Prefix", "/", fx.Backend("errors", 80)), fx.Path("Prefix", "/auth", fx.Backend("auth", 80))))
	tab, probs := Build(served(plain, timed, bad, errs))
	p := tab.Match("p.example", "/").Policy
	if !p.Plain || p.Nginx.ProxyBodySize != 1<<20 || !p.Nginx.SSLRedirect || p.HSTS == nil {
		t.Errorf("plain policy %+v", p)
	}
	p = tab.Match("t.example", "/").Policy
	if p.Plain || p.ReadTimeout.Seconds() != 5 || p.ConnectTimeout != 0 || p.DefaultBackend == nil || p.DefaultBackend.Service.Name != "errors" ||
		p.AuthBackend == nil || p.AuthBackend.Service.Name != "auth" || len(p.AuthBackend.Endpoints) != 1 {
		t.Errorf("timed policy %+v", p)
	}
	if p := tab.Match("b.example", "/").Policy; p.ConnectTimeout.Seconds() != 5 {
		t.Errorf("an invalid timeout should fall back to 5s, got %s", p.ConnectTimeout)
	}
	if got := reasons(probs, "bad"); !slices.Equal(got, []string{"InvalidAnnotation"}) {
		t.Errorf("bad problems %v", got)
	}
	if len(probs) != 1 {
		t.Errorf("problems %v", probs)
	}
}

// FuzzBuildAnnotated: any path, annotations and request give a table without panics in which Match
// never returns a canary route and a regex host still honours Exact paths.
func FuzzBuildAnnotated(f *testing.F) {
	f.Add("/api(/|$)(.*)", "/$2", "alias.example", "true", "/api/x")
	f.Add("/x[", "", "*.w.example", "false", "/x")
	f.Add("/(?i)A+", "${1}", "bad alias!", "true", "/aaa")
	f.Fuzz(func(t *testing.T, path, target, alias, canary, req string) {
		main := withAnn(fx.Ingress("main", 2, fx.Rule("a.example", fx.Path("ImplementationSpecific", path, fx.Backend("web", 80)), fx.Path("Exact", "/exact", fx.Backend("exact", 80)))),
			"rewrite-target", target, "use-regex", "true", "server-alias", alias)
		can := withAnn(fx.Ingress("can", 1, fx.Rule("a.example", fx.Path("ImplementationSpecific", path, fx.Backend("new", 80)))), "canary", canary)
		tab, _ := Build(served(main, can))
		for _, host := range []string{"a.example", alias} {
			r := tab.Match(host, req)
			if r != nil && r.Ingress.Name == "can" {
				t.Fatalf("Match returned the canary route for %q", req)
			}
			if r != nil && r.Policy.Nginx.RewriteTarget != "" && r.Regex && strings.HasPrefix(req, "/") {
				if out := r.Policy.Nginx.Rewrite(req, r.Path); len(out) == 0 || out[0] != '/' {
					t.Fatalf("rewrite of %q gave %q", req, out)
				}
			}
		}
		if got := serviceOf(tab.Match("a.example", "/exact")); got != "exact" {
			t.Fatalf("/exact -> %s", got)
		}
	})
}

// TestTLSListedHostsRedirect: a host listed in spec.tls counts as a TLS host (redirected to HTTPS,
// HSTS) even without a usable Secret, as in ingress-nginx: it is served with the default or an ACME
// certificate.
func TestTLSListedHostsRedirect(t *testing.T) {
	acme := fx.Ingress("acme", 1, fx.Rule("a.example", fx.Path("Prefix", "/", fx.Backend("web", 80))), fx.TLS("", "a.example"))
	plain := fx.Ingress("plain", 0, fx.Rule("b.example", fx.Path("Prefix", "/", fx.Backend("web", 80))))
	tab, _ := Build(served(acme, plain))
	if r := tab.Match("a.example", "/"); !r.TLS {
		t.Error("a host listed in spec.tls without a Secret is not a TLS host")
	}
	if r := tab.Match("b.example", "/"); r.TLS {
		t.Error("a host without spec.tls is a TLS host")
	}
}
