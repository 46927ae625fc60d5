package annotations

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestRewrite(t *testing.T) {
	for _, c := range []struct {
		name, target, match, path, want string
		problems                        []string
	}{
		{"capture group", "/$2", "/something(/|$)(.*)", "/something/new", "/new", nil},
		{"capture group, bare prefix", "/$2", "/something(/|$)(.*)", "/something", "/", nil},
		{"case insensitive", "/$2", "/something(/|$)(.*)", "/SomeThing/X", "/X", nil},
		{"braced group", "/api/${1}/v2", "/v1/([a-z]+)", "/v1/users/7", "/api/users/v2", nil},
		{"two groups", "/$2/$1", "/([^/]+)/([^/]+)", "/a/b/c", "/b/a", nil},
		{"missing group is empty", "/x$5", "/(a)", "/a", "/x", nil},
		{"plain target replaces the whole path", "/", "/app", "/app/deep/path", "/", nil},
		{"literal prefix", "/static/$1", "/assets/(.*)", "/assets/css/site.css", "/static/css/site.css", nil},
		{"anchored at the start", "/$1", "/v1/(.*)", "/api/v1/x", "/api/v1/x", nil},
		{"group-only target gains a slash", "$1", "/p/(.*)", "/p/q", "/q", nil},
		{"no match left alone", "/$1", "/only/(.*)", "/other", "/other", nil},
		{"query in target refused", "/x?a=$1", "/(.*)", "/p", "/p", []string{"InvalidAnnotation rewrite-target"}},
		{"nginx variable refused", "/$uri", "/(.*)", "/p", "/p", []string{"InvalidAnnotation rewrite-target"}},
		{"relative target refused", "new/$1", "/(.*)", "/p", "/p", []string{"InvalidAnnotation rewrite-target"}},
		{"bad regex path", "/$1", "/(a", "/a", "/a", []string{"InvalidAnnotation rewrite-target"}},
		{"PCRE lookahead refused", "/$1", "/(?=a)(.*)", "/a", "/a", []string{"InvalidAnnotation rewrite-target"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, probs := Parse(ingress(map[string]string{"rewrite-target": c.target}, c.match, "/"), nil)
			wantProblems(t, probs, c.problems...)
			if got := p.Rewrite(c.path, c.match); got != c.want {
				t.Errorf("Rewrite(%q, %q) = %q, want %q", c.path, c.match, got, c.want)
			}
		})
	}
	p, probs := Parse(ingress(map[string]string{"use-regex": "true"}, "/api/v[0-9]+/.*", "/(a"), nil)
	wantProblems(t, probs, "InvalidAnnotation use-regex")
	for _, c := range []struct {
		path, match string
		want        bool
	}{
		{"/api/v2/users", "/api/v[0-9]+/.*", true}, {"/API/V2/x", "/api/v[0-9]+/.*", true}, {"/x/api/v2/", "/api/v[0-9]+/.*", false},
		{"/api/vx/", "/api/v[0-9]+/.*", false}, {"/a", "/(a", false}, {"/a", "/not-an-ingress-path", false},
	} {
		if got := p.MatchPath(c.path, c.match); got != c.want {
			t.Errorf("MatchPath(%q, %q) = %t, want %t", c.path, c.match, got, c.want)
		}
	}
	if got := p.Rewrite("/api/v2/x", "/api/v[0-9]+/.*"); got != "/api/v2/x" {
		t.Errorf("use-regex alone rewrote to %q", got)
	}
}

func TestCanaryDecide(t *testing.T) {
	cookie := func(v string) string { return "session=1; canary=" + v }
	never := func(int) int { panic("weight consulted") }
	fixed := func(v int) func(int) int { return func(int) int { return v } }
	full := &Canary{Header: "X-Canary", Cookie: "canary", Weight: 30, WeightTotal: 100}
	withValue := &Canary{Header: "X-Canary", HeaderValue: "blue", Cookie: "canary", Weight: 0, WeightTotal: 100}
	p, _ := Parse(ingress(map[string]string{"canary": "true", "canary-by-header": "X-Region", "canary-by-header-pattern": "^eu-"}, "/"), nil)
	withPattern := p.Canary
	for _, c := range []struct {
		name   string
		c      *Canary
		header string
		cookie string
		randn  func(int) int
		want   bool
	}{
		{"header always", full, "always", cookie("never"), never, true},
		{"header never beats cookie", full, "never", cookie("always"), never, false},
		{"other header value falls to cookie", full, "maybe", cookie("always"), never, true},
		{"cookie never", full, "", cookie("never"), never, false},
		{"other cookie value falls to weight, in", full, "", cookie("x"), fixed(29), true},
		{"weight boundary out", full, "", "", fixed(30), false},
		{"header value match", withValue, "blue", "", never, true},
		{"header value mismatch falls through, never not special", withValue, "never", cookie("always"), never, true},
		{"header value mismatch, weight 0", withValue, "green", "", never, false},
		{"pattern match", withPattern, "eu-west", "", never, true},
		{"pattern mismatch", withPattern, "us-east", "", fixed(0), false},
		{"weight all", &Canary{Weight: 100, WeightTotal: 100}, "", "", never, true},
		{"weight total 1000", &Canary{Weight: 5, WeightTotal: 1000}, "", "", fixed(4), true},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := http.Header{}
			if c.header != "" {
				h.Set(c.c.Header, c.header)
			}
			if c.cookie != "" {
				h.Set("Cookie", c.cookie)
			}
			if got := c.c.Decide(h, c.randn); got != c.want {
				t.Errorf("Decide = %t, want %t", got, c.want)
			}
		})
	}
}

// TestCanaryWeightShare checks the weight with a real random source: 20 of 100 lands within a few
// standard deviations of 20% over many draws (the bound fails with probability below 1e-9).
func TestCanaryWeightShare(t *testing.T) {
	c := &Canary{Weight: 20, WeightTotal: 100}
	const n = 100000
	hits := 0
	src := newTestRand()
	for i := 0; i < n; i++ {
		if c.Decide(http.Header{}, src) {
			hits++
		}
	}
	if hits < 19000 || hits > 21000 {
		t.Errorf("%d of %d went to the canary, want about 20000", hits, n)
	}
}

func TestCORSHeaders(t *testing.T) {
	any := &CORS{AllowOrigins: []string{"*"}, AllowMethods: defaultCORSMethods, AllowHeaders: defaultCORSHeaders, AllowCredentials: true, MaxAge: 1728000}
	list := &CORS{AllowOrigins: []string{"https://a.example.com", "https://*.b.example:8443"}, AllowMethods: "GET", AllowHeaders: "X-Token", ExposeHeaders: "X-Id", MaxAge: 60}
	for _, c := range []struct {
		name, method, origin string
		c                    *CORS
		preflight            bool
		want                 map[string]string // nil: no CORS headers
	}{
		{"preflight any origin", "OPTIONS", "https://x.example", any, true, map[string]string{
			"Access-Control-Allow-Origin": "https://x.example", "Access-Control-Allow-Credentials": "true", "Vary": "Origin",
			"Access-Control-Allow-Methods": defaultCORSMethods, "Access-Control-Allow-Headers": defaultCORSHeaders,
			"Access-Control-Max-Age": "1728000", "Content-Length": "0", "Content-Type": "text/plain; charset=utf-8"}},
		{"simple request, no origin, any", "GET", "", any, false, map[string]string{
			"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Credentials": "true",
			"Access-Control-Allow-Methods": defaultCORSMethods, "Access-Control-Allow-Headers": defaultCORSHeaders}},
		{"listed origin, any case", "POST", "HTTPS://A.example.com", list, false, map[string]string{
			"Access-Control-Allow-Origin": "HTTPS://A.example.com", "Vary": "Origin", "Access-Control-Allow-Methods": "GET",
			"Access-Control-Allow-Headers": "X-Token", "Access-Control-Expose-Headers": "X-Id"}},
		{"wildcard origin", "OPTIONS", "https://api.b.example:8443", list, true, map[string]string{
			"Access-Control-Allow-Origin": "https://api.b.example:8443", "Vary": "Origin", "Access-Control-Allow-Methods": "GET",
			"Access-Control-Allow-Headers": "X-Token", "Access-Control-Expose-Headers": "X-Id", "Access-Control-Max-Age": "60",
			"Content-Length": "0", "Content-Type": "text/plain; charset=utf-8"}},
		{"wildcard needs a label", "GET", "https://b.example:8443", list, false, nil},
		{"wildcard one label only", "GET", "https://x.y.b.example:8443", list, false, nil},
		{"wrong port", "GET", "https://api.b.example", list, false, nil},
		{"wrong scheme", "GET", "http://a.example.com", list, false, nil},
		{"suffix trick", "GET", "https://a.example.com.evil.example", list, false, nil},
		{"no origin, list", "OPTIONS", "", list, false, nil},
		{"no origins allowed", "OPTIONS", "https://a.example.com", &CORS{}, false, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := http.Header{}
			if c.origin != "" {
				req.Set("Origin", c.origin)
			}
			h, pre := c.c.Headers(c.method, req)
			if pre != c.preflight {
				t.Errorf("preflight = %t, want %t", pre, c.preflight)
			}
			if c.want == nil {
				if h != nil {
					t.Errorf("headers = %v, want none", h)
				}
				return
			}
			if len(h) != len(c.want) {
				t.Errorf("headers = %v, want %v", h, c.want)
			}
			for k, v := range c.want {
				if h.Get(k) != v {
					t.Errorf("%s = %q, want %q", k, h.Get(k), v)
				}
			}
		})
	}
}

func TestAffinityCookie(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	chrome60 := "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/60.0.3112.78 Safari/537.36"
	chrome120 := "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
	for _, c := range []struct {
		name      string
		a         Affinity
		routePath string
		ua        string
		want      string
	}{
		{"defaults use the rule path", Affinity{Name: "INGRESSCOOKIE"}, "/shop", chrome120, "INGRESSCOOKIE=ep1; Path=/shop; HttpOnly"},
		{"default backend path", Affinity{Name: "INGRESSCOOKIE"}, "", chrome120, "INGRESSCOOKIE=ep1; Path=/; HttpOnly"},
		{"all options", Affinity{Name: "route", Path: "/", Expires: time.Hour, MaxAge: time.Hour, SameSite: http.SameSiteStrictMode, Secure: true}, "/x", chrome120,
			"route=ep1; Path=/; Expires=Mon, 30 Nov 2026 13:00:00 GMT; Max-Age=3600; HttpOnly; Secure; SameSite=Strict"},
		{"SameSite=None forces Secure", Affinity{Name: "r", SameSite: http.SameSiteNoneMode}, "/", chrome120, "r=ep1; Path=/; HttpOnly; Secure; SameSite=None"},
		{"conditional None, old Chrome", Affinity{Name: "r", SameSite: http.SameSiteNoneMode, ConditionalSameSiteNone: true}, "/", chrome60, "r=ep1; Path=/; HttpOnly"},
		{"conditional None, new Chrome", Affinity{Name: "r", SameSite: http.SameSiteNoneMode, ConditionalSameSiteNone: true}, "/", chrome120, "r=ep1; Path=/; HttpOnly; Secure; SameSite=None"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := c.a.Cookie("ep1", c.routePath, c.ua, now).String(); got != c.want {
				t.Errorf("cookie = %q, want %q", got, c.want)
			}
		})
	}
}

func TestForwardAuthURLs(t *testing.T) {
	v := Vars{Scheme: "https", Host: "shop.example.com", RequestURI: "/cart?id=7&x=a b"}
	if got := Expand("https://$host/oauth2/auth", v); got != "https://shop.example.com/oauth2/auth" {
		t.Errorf("Expand = %q", got)
	}
	if got := Expand("$scheme://$http_host$request_uri|$escaped_request_uri|$hostname", v); got != "https://shop.example.com/cart?id=7&x=a b|%2Fcart%3Fid%3D7%26x%3Da+b|$hostname" {
		t.Errorf("Expand = %q", got)
	}
	for _, c := range []struct{ signin, param, want string }{
		{"https://$host/oauth2/start?rd=$escaped_request_uri", "rd", "https://shop.example.com/oauth2/start?rd=%2Fcart%3Fid%3D7%26x%3Da+b"},
		{"https://login.example/start", "rd", "https://login.example/start?rd=https%3A%2F%2Fshop.example.com%2Fcart%3Fid%3D7%26x%3Da+b"},
		{"https://login.example/start?app=shop", "next", "https://login.example/start?app=shop&next=https%3A%2F%2Fshop.example.com%2Fcart%3Fid%3D7%26x%3Da+b"},
		{"https://login.example/start?ford=1", "rd", "https://login.example/start?ford=1&rd=https%3A%2F%2Fshop.example.com%2Fcart%3Fid%3D7%26x%3Da+b"},
		{"", "rd", ""},
	} {
		a := &ForwardAuth{Signin: c.signin, RedirectParam: c.param}
		if got := a.SigninURL(v); got != c.want {
			t.Errorf("SigninURL(%q) = %q, want %q", c.signin, got, c.want)
		}
	}
}

func TestUpstreamHashKey(t *testing.T) {
	r := httptest.NewRequest("GET", "http://shop.example.com/cart/items?id=7&x=1", nil)
	r.Header.Set("X-User-Id", "u42")
	r.AddCookie(&http.Cookie{Name: "sid", Value: "abc"})
	for _, c := range []struct{ by, want string }{
		{"$request_uri", "/cart/items?id=7&x=1"},
		{"$uri", "/cart/items"},
		{"$args", "id=7&x=1"},
		{"$arg_id", "7"},
		{"$host", "shop.example.com"},
		{"$binary_remote_addr", "192.0.2.9"},
		{"$remote_addr-$http_x_user_id", "192.0.2.9-u42"},
		{"$cookie_sid$cookie_missing", "abc"},
		{"user:$HTTP_X_USER_ID", "user:u42"},
	} {
		h, err := ParseUpstreamHash(c.by)
		if err != nil {
			t.Fatalf("ParseUpstreamHash(%q): %v", c.by, err)
		}
		if got := h.Key(r, "192.0.2.9"); got != c.want {
			t.Errorf("Key(%q) = %q, want %q", c.by, got, c.want)
		}
	}
	for _, bad := range []string{"", "literal", "$", "$http_", "$cookie_", "$request_time", "$1"} {
		if _, err := ParseUpstreamHash(bad); err == nil {
			t.Errorf("ParseUpstreamHash(%q) accepted", bad)
		}
	}
}
