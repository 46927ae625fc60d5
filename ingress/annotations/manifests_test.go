package annotations

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/yaml"
)

// loadManifests reads every Ingress and Secret of testdata/*.yaml.
func loadManifests(t *testing.T) (map[string]*networkingv1.Ingress, SecretGetter) {
	t.Helper()
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	ings := map[string]*networkingv1.Ingress{}
	secs := map[types.NamespacedName]*corev1.Secret{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		r := yaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			var meta struct{ Kind string }
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			switch meta.Kind {
			case "Ingress":
				var ing networkingv1.Ingress
				if err := yaml.UnmarshalStrict(doc, &ing); err != nil {
					t.Fatalf("%s: %v", f, err)
				}
				ings[ing.Namespace+"/"+ing.Name] = &ing
			case "Secret":
				var s corev1.Secret
				if err := yaml.UnmarshalStrict(doc, &s); err != nil {
					t.Fatalf("%s: %v", f, err)
				}
				secs[types.NamespacedName{Namespace: s.Namespace, Name: s.Name}] = &s
			case "":
			default:
				t.Fatalf("%s: unexpected kind %q", f, meta.Kind)
			}
		}
	}
	return ings, func(k types.NamespacedName) *corev1.Secret { return secs[k] }
}

// TestRealWorldManifests parses Ingresses written for ingress-nginx, as users have them, without a
// single Problem, and checks that each means what it meant there.
func TestRealWorldManifests(t *testing.T) {
	ings, get := loadManifests(t)
	pol := map[string]*Policy{}
	for key, ing := range ings {
		p, probs := Parse(ing, get)
		if len(probs) > 0 {
			t.Errorf("%s: problems %v", key, probs)
		}
		if p.Denied != "" {
			t.Errorf("%s: denied: %s", key, p.Denied)
		}
		pol[key] = p
	}
	if len(pol) != 15 {
		t.Fatalf("read %d Ingresses, want 15", len(pol))
	}
	check := func(what string, ok bool) {
		t.Helper()
		if !ok {
			t.Errorf("%s: wrong", what)
		}
	}
	p := pol["default/rewrite"]
	check("rewrite /something/new", p.Rewrite("/something/new", "/something(/|$)(.*)") == "/new")
	check("rewrite /something", p.Rewrite("/something", "/something(/|$)(.*)") == "/")
	p = pol["default/api"]
	check("api rewrite", p.Rewrite("/api/users/1", "/api/(.*)") == "/users/1" && p.XForwardedPrefix == "/api")
	check("api limits", p.ProxyBodySize == 50<<20 && p.ReadTimeout.Seconds() == 3600 && !p.SSLRedirect)
	check("app-root", pol["default/approot"].AppRoot == "/app1")

	c := pol["echo/canary"].Canary
	check("production is no canary", pol["echo/production"].Canary == nil)
	check("canary header", c.Decide(http.Header{"X-Canary": {"always"}}, nil))
	check("canary cookie", !c.Decide(http.Header{"Cookie": {"canary=never"}}, nil))
	check("canary weight", c.Decide(http.Header{}, func(int) int { return 9 }) && !c.Decide(http.Header{}, func(int) int { return 10 }))
	c = pol["echo/canary-region"].Canary
	check("canary region", c.Decide(http.Header{"Region": {"eu-west"}}, nil) && c.WeightTotal == 1000)

	for _, key := range []string{"default/ingress-with-auth", "default/ingress-with-auth-map"} {
		a := pol[key].BasicAuth
		_, ok := a.Check(basicHeader("foo", "password"))
		_, bad := a.Check(basicHeader("foo", "bar"))
		check(key, ok && !bad)
	}
	check("realm", pol["default/ingress-with-auth"].BasicAuth.Challenge() == `Basic realm="Authentication Required - foo"`)
	fa := pol["kube-system/dashboard"].ForwardAuth
	v := Vars{Scheme: "https", Host: "dashboard.example.com", RequestURI: "/#/overview?x=1"}
	check("oauth2 auth-url", Expand(fa.URL, v) == "https://dashboard.example.com/oauth2/auth")
	check("oauth2 signin", fa.SigninURL(v) == "https://dashboard.example.com/oauth2/start?rd=%2F%23%2Foverview%3Fx%3D1")
	check("oauth2 headers", len(fa.ResponseHeaders) == 3)

	h, pre := pol["web/api-cors"].CORS.Headers("OPTIONS", http.Header{"Origin": {"https://pr-12.preview.example.com"}})
	check("cors preflight", pre && h.Get("Access-Control-Allow-Origin") == "https://pr-12.preview.example.com" && h.Get("Access-Control-Max-Age") == "600")
	h, _ = pol["web/api-cors"].CORS.Headers("GET", http.Header{"Origin": {"https://evil.example"}})
	check("cors refuses other origins", h == nil)
	h, _ = pol["web/public-cors"].CORS.Headers("GET", http.Header{"Origin": {"https://any.example"}})
	check("cors defaults", h.Get("Access-Control-Allow-Origin") == "https://any.example")

	check("permanent redirect", *pol["web/old-domain"].Redirect == Redirect{URL: "https://www.example.com$request_uri", Code: 308})
	check("temporal redirect", pol["web/maintenance"].Redirect.Code == 302)
	p = pol["web/www"]
	check("www", p.ForceSSLRedirect && p.FromToWWWRedirect && len(p.ServerAliases) == 2 && p.Affinity.Name == "route" &&
		p.RateLimit.RPS == 20 && len(p.CustomHTTPErrors) == 2 && p.DefaultBackend == "error-pages")
	p = pol["web/grpc"]
	check("grpc", p.BackendProtocol == "GRPC" && p.UpstreamHash != nil && p.SourceAllowed(netip.MustParseAddr("192.0.2.5")) &&
		!p.SourceAllowed(netip.MustParseAddr("203.0.113.5")))
}
