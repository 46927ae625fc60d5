package annotations

import (
	"net/http"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"
)

// TestParseDefaults: an Ingress without annotations gets ingress-nginx's defaults and no Problem.
func TestParseDefaults(t *testing.T) {
	p, probs := Parse(ingress(nil, "/"), nil)
	wantProblems(t, probs)
	want := &Policy{SSLRedirect: true, BackendProtocol: "HTTP", ProxyBodySize: 1 << 20, ConnectTimeout: 5 * time.Second,
		ReadTimeout: 60 * time.Second, SendTimeout: 60 * time.Second, HSTS: DefaultDefaults().HSTS}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("Parse() = %+v, want %+v", p, want)
	}
	if got := p.HSTS.Header(); got != "max-age=31536000; includeSubDomains" {
		t.Errorf("HSTS header = %q", got)
	}
}

// TestParse covers each annotation: a valid value, and each kind of invalid value with its fallback.
func TestParse(t *testing.T) {
	type tc struct {
		name     string
		ann      map[string]string
		check    func(t *testing.T, p *Policy)
		problems []string
	}
	eq := func(t *testing.T, what string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %#v, want %#v", what, got, want)
		}
	}
	cases := []tc{
		{name: "ssl-redirect off, force on", ann: map[string]string{"ssl-redirect": "false", "force-ssl-redirect": "true"},
			check: func(t *testing.T, p *Policy) {
				eq(t, "ssl", [2]bool{p.SSLRedirect, p.ForceSSLRedirect}, [2]bool{false, true})
			}},
		{name: "ssl-redirect bad", ann: map[string]string{"ssl-redirect": "yes please"}, problems: []string{"InvalidAnnotation ssl-redirect"},
			check: func(t *testing.T, p *Policy) { eq(t, "SSLRedirect", p.SSLRedirect, true) }},
		{name: "backend-protocol lower case", ann: map[string]string{"backend-protocol": "grpcs"},
			check: func(t *testing.T, p *Policy) { eq(t, "proto", p.BackendProtocol, "GRPCS") }},
		{name: "backend-protocol FCGI", ann: map[string]string{"backend-protocol": "FCGI"}, problems: []string{"InvalidAnnotation backend-protocol"},
			check: func(t *testing.T, p *Policy) { eq(t, "proto", p.BackendProtocol, "HTTP") }},
		{name: "body size 8m", ann: map[string]string{"proxy-body-size": "8m"},
			check: func(t *testing.T, p *Policy) { eq(t, "size", p.ProxyBodySize, int64(8<<20)) }},
		{name: "body size 0 unlimited", ann: map[string]string{"proxy-body-size": "0"},
			check: func(t *testing.T, p *Policy) { eq(t, "size", p.ProxyBodySize, int64(0)) }},
		{name: "body size bad", ann: map[string]string{"proxy-body-size": "10mb"}, problems: []string{"InvalidAnnotation proxy-body-size"},
			check: func(t *testing.T, p *Policy) { eq(t, "size", p.ProxyBodySize, int64(1<<20)) }},
		{name: "timeouts", ann: map[string]string{"proxy-connect-timeout": "10", "proxy-read-timeout": "2m", "proxy-send-timeout": "1h 30s"},
			check: func(t *testing.T, p *Policy) {
				eq(t, "timeouts", []time.Duration{p.ConnectTimeout, p.ReadTimeout, p.SendTimeout}, []time.Duration{10 * time.Second, 2 * time.Minute, time.Hour + 30*time.Second})
			}},
		{name: "timeouts bad", ann: map[string]string{"proxy-connect-timeout": "0", "proxy-read-timeout": "-5", "proxy-send-timeout": "5 minutes"},
			problems: []string{"InvalidAnnotation proxy-connect-timeout", "InvalidAnnotation proxy-read-timeout", "InvalidAnnotation proxy-send-timeout"},
			check: func(t *testing.T, p *Policy) {
				eq(t, "timeouts", []time.Duration{p.ConnectTimeout, p.ReadTimeout, p.SendTimeout}, []time.Duration{5 * time.Second, time.Minute, time.Minute})
			}},
		{name: "proxy-buffering", ann: map[string]string{"proxy-buffering": "on"},
			check: func(t *testing.T, p *Policy) { eq(t, "buffering", p.ProxyBuffering, true) }},
		{name: "proxy-buffering bad", ann: map[string]string{"proxy-buffering": "true"}, problems: []string{"InvalidAnnotation proxy-buffering"},
			check: func(t *testing.T, p *Policy) { eq(t, "buffering", p.ProxyBuffering, false) }},
		{name: "ssl-passthrough", ann: map[string]string{"ssl-passthrough": "true"},
			check: func(t *testing.T, p *Policy) { eq(t, "passthrough", p.SSLPassthrough, true) }},
		{name: "upstream-hash-by", ann: map[string]string{"upstream-hash-by": "$binary_remote_addr"},
			check: func(t *testing.T, p *Policy) { eq(t, "hash", p.UpstreamHash.Source, "$binary_remote_addr") }},
		{name: "upstream-hash-by constant", ann: map[string]string{"upstream-hash-by": "constant"}, problems: []string{"InvalidAnnotation upstream-hash-by"},
			check: func(t *testing.T, p *Policy) { eq(t, "hash", p.UpstreamHash, (*UpstreamHash)(nil)) }},
		{name: "upstream-hash-by unknown var", ann: map[string]string{"upstream-hash-by": "$ssl_client_s_dn"}, problems: []string{"InvalidAnnotation upstream-hash-by"}},
		{name: "allowlist", ann: map[string]string{"allowlist-source-range": "192.0.2.0/24, 2001:db8::1"},
			check: func(t *testing.T, p *Policy) {
				eq(t, "allow", p.AllowSourceRange, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::1/128")})
				eq(t, "denied", p.Denied, "")
			}},
		{name: "whitelist old name", ann: map[string]string{"whitelist-source-range": "198.51.100.7"},
			check: func(t *testing.T, p *Policy) {
				eq(t, "allow", p.AllowSourceRange, []netip.Prefix{netip.MustParsePrefix("198.51.100.7/32")})
			}},
		{name: "both allowlist names", ann: map[string]string{"whitelist-source-range": "198.51.100.7", "allowlist-source-range": "192.0.2.0/24"},
			problems: []string{"ConflictingAnnotation whitelist-source-range"},
			check: func(t *testing.T, p *Policy) {
				eq(t, "allow", p.AllowSourceRange, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")})
			}},
		{name: "allowlist bad fails closed", ann: map[string]string{"allowlist-source-range": "192.0.2.0/24, 10.0.0.300"}, problems: []string{"InvalidAnnotation allowlist-source-range"},
			check: func(t *testing.T, p *Policy) { eq(t, "denied", p.Denied != "", true) }},
		{name: "denylist bad fails closed", ann: map[string]string{"denylist-source-range": "192.0.2.1/24"}, problems: []string{"InvalidAnnotation denylist-source-range"},
			check: func(t *testing.T, p *Policy) { eq(t, "denied", p.Denied != "", true) }},
		{name: "app-root", ann: map[string]string{"app-root": "/app1"},
			check: func(t *testing.T, p *Policy) { eq(t, "app-root", p.AppRoot, "/app1") }},
		{name: "app-root URL", ann: map[string]string{"app-root": "https://evil.example/"}, problems: []string{"InvalidAnnotation app-root"},
			check: func(t *testing.T, p *Policy) { eq(t, "app-root", p.AppRoot, "") }},
		{name: "app-root protocol relative", ann: map[string]string{"app-root": "//evil.example/"}, problems: []string{"InvalidAnnotation app-root"}},
		{name: "permanent-redirect default code", ann: map[string]string{"permanent-redirect": "https://www.example.com$request_uri"},
			check: func(t *testing.T, p *Policy) {
				eq(t, "redirect", p.Redirect, &Redirect{URL: "https://www.example.com$request_uri", Code: 301})
			}},
		{name: "permanent-redirect 308", ann: map[string]string{"permanent-redirect": "https://example.com/", "permanent-redirect-code": "308"},
			check: func(t *testing.T, p *Policy) {
				eq(t, "redirect", p.Redirect, &Redirect{URL: "https://example.com/", Code: 308})
			}},
		{name: "permanent-redirect bad code", ann: map[string]string{"permanent-redirect": "https://example.com/", "permanent-redirect-code": "200"},
			problems: []string{"InvalidAnnotation permanent-redirect-code"},
			check: func(t *testing.T, p *Policy) {
				eq(t, "redirect", p.Redirect, &Redirect{URL: "https://example.com/", Code: 301})
			}},
		{name: "temporal wins", ann: map[string]string{"permanent-redirect": "https://a.example/", "temporal-redirect": "https://b.example/"},
			check: func(t *testing.T, p *Policy) {
				eq(t, "redirect", p.Redirect, &Redirect{URL: "https://b.example/", Code: 302})
			}},
		{name: "redirect relative", ann: map[string]string{"temporal-redirect": "/elsewhere"}, problems: []string{"InvalidAnnotation temporal-redirect"},
			check: func(t *testing.T, p *Policy) { eq(t, "redirect", p.Redirect, (*Redirect)(nil)) }},
		{name: "redirect unknown variable", ann: map[string]string{"permanent-redirect": "https://$server_name/"}, problems: []string{"InvalidAnnotation permanent-redirect"}},
		{name: "redirect javascript", ann: map[string]string{"permanent-redirect": "javascript:alert(1)"}, problems: []string{"InvalidAnnotation permanent-redirect"}},
		{name: "from-to-www", ann: map[string]string{"from-to-www-redirect": "true"},
			check: func(t *testing.T, p *Policy) { eq(t, "www", p.FromToWWWRedirect, true) }},
		{name: "custom-http-errors", ann: map[string]string{"custom-http-errors": "503,404, 404,500", "default-backend": "errors"},
			check: func(t *testing.T, p *Policy) {
				eq(t, "codes", p.CustomHTTPErrors, []int{404, 500, 503})
				eq(t, "backend", p.DefaultBackend, "errors")
			}},
		{name: "custom-http-errors bad", ann: map[string]string{"custom-http-errors": "404,abc", "default-backend": "Errors_Svc"},
			problems: []string{"InvalidAnnotation custom-http-errors", "InvalidAnnotation default-backend"},
			check: func(t *testing.T, p *Policy) {
				eq(t, "codes", p.CustomHTTPErrors, []int(nil))
				eq(t, "backend", p.DefaultBackend, "")
			}},
		{name: "default-backend with port", ann: map[string]string{"default-backend": "errors:http"},
			check: func(t *testing.T, p *Policy) { eq(t, "backend", p.DefaultBackend, "errors:http") }},
		{name: "server-alias", ann: map[string]string{"server-alias": "www.shop.example.com, *.shop.example.org,bad host,WWW.SHOP.EXAMPLE.COM"},
			problems: []string{"InvalidAnnotation server-alias"},
			check: func(t *testing.T, p *Policy) {
				eq(t, "aliases", p.ServerAliases, []string{"www.shop.example.com", "*.shop.example.org"})
			}},
		{name: "limits", ann: map[string]string{"limit-rps": "10", "limit-connections": "20", "limit-allowlist": "192.0.2.0/24"},
			check: func(t *testing.T, p *Policy) {
				eq(t, "limits", p.RateLimit, &RateLimit{RPS: 10, Connections: 20, BurstMultiplier: 5, Exempt: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}})
			}},
		{name: "limits bad", ann: map[string]string{"limit-rps": "ten", "limit-burst-multiplier": "0", "limit-rpm": "60"},
			problems: []string{"InvalidAnnotation limit-rps", "InvalidAnnotation limit-burst-multiplier"},
			check: func(t *testing.T, p *Policy) {
				eq(t, "limits", p.RateLimit, &RateLimit{RPM: 60, BurstMultiplier: 5})
			}},
		{name: "limit-allowlist alone is no limit", ann: map[string]string{"limit-whitelist": "192.0.2.0/24"},
			check: func(t *testing.T, p *Policy) { eq(t, "limits", p.RateLimit, (*RateLimit)(nil)) }},
		{name: "snippets ignored", ann: map[string]string{"configuration-snippet": "more_set_headers \"X: y\";", "server-snippet": "location /x {}", "auth-snippet": "x"},
			problems: []string{"SnippetIgnored configuration-snippet", "SnippetIgnored server-snippet", "SnippetIgnored auth-snippet"}},
		{name: "unsupported", ann: map[string]string{"enable-opentelemetry": "true", "proxy-buffer-size": "16k", "kubernetes.io/ingress.class": "nginx", "example.com/other": "x"},
			problems: []string{"UnsupportedAnnotation enable-opentelemetry", "UnsupportedAnnotation proxy-buffer-size"}},
		{name: "baregate spelling wins", ann: map[string]string{"baregate.io/proxy-body-size": "2m", "proxy-body-size": "4m"},
			problems: []string{"ConflictingAnnotation baregate.io/proxy-body-size"},
			check:    func(t *testing.T, p *Policy) { eq(t, "size", p.ProxyBodySize, int64(2<<20)) }},
		{name: "conflict reported once", ann: map[string]string{"baregate.io/use-regex": "true", "use-regex": "false", "rewrite-target": "/$1",
			"baregate.io/auth-secret": "a", "auth-secret": "b", "auth-type": "basic"},
			problems: []string{"ConflictingAnnotation baregate.io/use-regex", "ConflictingAnnotation baregate.io/auth-secret", "InvalidAnnotation baregate.io/auth-secret"},
			check:    func(t *testing.T, p *Policy) { eq(t, "use-regex", p.UseRegex, true) }},
		{name: "baregate spelling alone", ann: map[string]string{"baregate.io/proxy-read-timeout": "90s"},
			check: func(t *testing.T, p *Policy) { eq(t, "read", p.ReadTimeout, 90*time.Second) }},
		{name: "x-forwarded-prefix and upstream-vhost", ann: map[string]string{"x-forwarded-prefix": "/shop", "upstream-vhost": "internal.shop.svc:8080"},
			check: func(t *testing.T, p *Policy) {
				eq(t, "prefix", p.XForwardedPrefix, "/shop")
				eq(t, "vhost", p.UpstreamVhost, "internal.shop.svc:8080")
			}},
		{name: "x-forwarded-prefix and upstream-vhost bad", ann: map[string]string{"x-forwarded-prefix": "shop", "upstream-vhost": "$host:99999"},
			problems: []string{"InvalidAnnotation x-forwarded-prefix", "InvalidAnnotation upstream-vhost"},
			check: func(t *testing.T, p *Policy) {
				eq(t, "prefix", p.XForwardedPrefix, "")
				eq(t, "vhost", p.UpstreamVhost, "")
			}},
		{name: "values are trimmed", ann: map[string]string{"enable-cors": "true\n", "cors-max-age": " 600 "},
			check: func(t *testing.T, p *Policy) { eq(t, "max-age", p.CORS.MaxAge, 600) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, probs := Parse(ingress(c.ann, "/"), nil)
			wantProblems(t, probs, c.problems...)
			if c.check != nil {
				c.check(t, p)
			}
		})
	}
}

func TestParseCORS(t *testing.T) {
	p, probs := Parse(ingress(map[string]string{"enable-cors": "true"}, "/"), nil)
	wantProblems(t, probs)
	want := &CORS{AllowOrigins: []string{"*"}, AllowMethods: defaultCORSMethods, AllowHeaders: defaultCORSHeaders, AllowCredentials: true, MaxAge: 1728000}
	if !reflect.DeepEqual(p.CORS, want) {
		t.Errorf("defaults = %+v, want %+v", p.CORS, want)
	}
	p, probs = Parse(ingress(map[string]string{"enable-cors": "true", "cors-allow-origin": "https://a.example.com, https://*.b.example:8443",
		"cors-allow-methods": "GET,POST", "cors-allow-headers": "X-Token, Content-Type", "cors-expose-headers": "*",
		"cors-allow-credentials": "false", "cors-max-age": "60"}, "/"), nil)
	wantProblems(t, probs)
	want = &CORS{AllowOrigins: []string{"https://a.example.com", "https://*.b.example:8443"}, AllowMethods: "GET, POST",
		AllowHeaders: "X-Token, Content-Type", ExposeHeaders: "*", MaxAge: 60}
	if !reflect.DeepEqual(p.CORS, want) {
		t.Errorf("set = %+v, want %+v", p.CORS, want)
	}
	p, probs = Parse(ingress(map[string]string{"enable-cors": "true", "cors-allow-origin": "a.example.com", "cors-allow-methods": "GET;DROP",
		"cors-allow-headers": "X Y", "cors-max-age": "-1"}, "/"), nil)
	wantProblems(t, probs, "InvalidAnnotation cors-allow-origin", "InvalidAnnotation cors-allow-methods", "InvalidAnnotation cors-allow-headers", "InvalidAnnotation cors-max-age")
	if p.CORS.AllowOrigins != nil || p.CORS.AllowMethods != defaultCORSMethods || p.CORS.MaxAge != defaultCORSMaxAge {
		t.Errorf("fallbacks = %+v", p.CORS)
	}
	p, _ = Parse(ingress(map[string]string{"cors-allow-origin": "https://a.example"}, "/"), nil)
	if p.CORS != nil {
		t.Errorf("cors-* without enable-cors turned CORS on")
	}
}

func TestParseAffinity(t *testing.T) {
	p, probs := Parse(ingress(map[string]string{"affinity": "cookie"}, "/"), nil)
	wantProblems(t, probs)
	if want := (&Affinity{Mode: "balanced", Name: "INGRESSCOOKIE"}); !reflect.DeepEqual(p.Affinity, want) {
		t.Errorf("defaults = %+v", p.Affinity)
	}
	p, probs = Parse(ingress(map[string]string{"affinity": "cookie", "affinity-mode": "persistent", "session-cookie-name": "route",
		"session-cookie-path": "/app", "session-cookie-expires": "172800", "session-cookie-max-age": "3600",
		"session-cookie-samesite": "None", "session-cookie-secure": "true", "session-cookie-change-on-failure": "true"}, "/"), nil)
	wantProblems(t, probs)
	want := &Affinity{Mode: "persistent", Name: "route", Path: "/app", Expires: 48 * time.Hour, MaxAge: time.Hour,
		SameSite: http.SameSiteNoneMode, Secure: true, ChangeOnFailure: true}
	if !reflect.DeepEqual(p.Affinity, want) {
		t.Errorf("set = %+v, want %+v", p.Affinity, want)
	}
	p, probs = Parse(ingress(map[string]string{"affinity": "cookie", "affinity-mode": "sticky", "session-cookie-name": "a=b",
		"session-cookie-path": "app", "session-cookie-expires": "1d", "session-cookie-samesite": "Sometimes"}, "/"), nil)
	wantProblems(t, probs, "InvalidAnnotation affinity-mode", "InvalidAnnotation session-cookie-name", "InvalidAnnotation session-cookie-path",
		"InvalidAnnotation session-cookie-expires", "InvalidAnnotation session-cookie-samesite")
	if want := (&Affinity{Mode: "balanced", Name: "INGRESSCOOKIE"}); !reflect.DeepEqual(p.Affinity, want) {
		t.Errorf("fallbacks = %+v", p.Affinity)
	}
	p, probs = Parse(ingress(map[string]string{"affinity": "ip"}, "/"), nil)
	wantProblems(t, probs, "InvalidAnnotation affinity")
	if p.Affinity != nil {
		t.Errorf("affinity ip turned affinity on")
	}
}

func TestParseCanary(t *testing.T) {
	p, probs := Parse(ingress(map[string]string{"canary": "true", "canary-by-header": "x-canary", "canary-by-header-value": "yes",
		"canary-by-header-pattern": "ignored(", "canary-by-cookie": "canary", "canary-weight": "20"}, "/"), nil)
	wantProblems(t, probs)
	c := p.Canary
	if c == nil || c.Header != "X-Canary" || c.HeaderValue != "yes" || c.HeaderPattern != nil || c.Cookie != "canary" || c.Weight != 20 || c.WeightTotal != 100 {
		t.Errorf("canary = %+v", c)
	}
	p, probs = Parse(ingress(map[string]string{"canary": "true", "canary-by-header": "X-Region", "canary-by-header-pattern": "^(eu|us)-",
		"canary-weight": "3", "canary-weight-total": "1000"}, "/"), nil)
	wantProblems(t, probs)
	if c := p.Canary; c.HeaderPattern == nil || c.HeaderPattern.String() != "^(eu|us)-" || c.WeightTotal != 1000 || c.Weight != 3 {
		t.Errorf("canary = %+v", c)
	}
	p, probs = Parse(ingress(map[string]string{"canary": "true", "canary-by-header": "X Bad", "canary-by-cookie": "a;b",
		"canary-weight": "150"}, "/"), nil)
	wantProblems(t, probs, "InvalidAnnotation canary-by-header", "InvalidAnnotation canary-by-cookie", "InvalidAnnotation canary-weight")
	if c := p.Canary; c.Header != "" || c.Cookie != "" || c.Weight != 100 {
		t.Errorf("canary fallbacks = %+v", c)
	}
	p, probs = Parse(ingress(map[string]string{"canary": "true", "canary-by-header": "X-Canary", "canary-by-header-pattern": "(?<=x)"}, "/"), nil)
	wantProblems(t, probs, "InvalidAnnotation canary-by-header-pattern")
	if p.Canary.HeaderPattern != nil {
		t.Errorf("bad pattern kept")
	}
	p, _ = Parse(ingress(map[string]string{"canary-weight": "50"}, "/"), nil)
	if p.Canary != nil {
		t.Errorf("canary-weight without canary made a canary")
	}
}

func TestParseForwardAuth(t *testing.T) {
	p, probs := Parse(ingress(map[string]string{"auth-url": "https://$host/oauth2/auth", "auth-signin": "https://$host/oauth2/start?rd=$escaped_request_uri",
		"auth-response-headers": "X-Auth-Request-User, x-auth-request-email", "auth-method": "post"}, "/"), nil)
	wantProblems(t, probs)
	want := &ForwardAuth{URL: "https://$host/oauth2/auth", Method: "POST", Signin: "https://$host/oauth2/start?rd=$escaped_request_uri",
		RedirectParam: "rd", ResponseHeaders: []string{"X-Auth-Request-User", "X-Auth-Request-Email"}}
	if !reflect.DeepEqual(p.ForwardAuth, want) || p.Denied != "" {
		t.Errorf("auth = %+v, want %+v (denied %q)", p.ForwardAuth, want, p.Denied)
	}
	p, probs = Parse(ingress(map[string]string{"auth-url": "http://auth.default.svc.cluster.local:8080/verify"}, "/"), nil)
	wantProblems(t, probs)
	if p.ForwardAuth.Method != "GET" || p.ForwardAuth.Signin != "" {
		t.Errorf("defaults = %+v", p.ForwardAuth)
	}
	p, probs = Parse(ingress(map[string]string{"auth-url": "auth-service/verify"}, "/"), nil)
	wantProblems(t, probs, "InvalidAnnotation auth-url")
	if p.ForwardAuth != nil || p.Denied == "" {
		t.Errorf("bad auth-url did not fail closed: %+v %q", p.ForwardAuth, p.Denied)
	}
	p, probs = Parse(ingress(map[string]string{"auth-url": "https://auth.example/", "auth-signin": "/login", "auth-response-headers": "X-User, Bad Header",
		"auth-method": "GE T"}, "/"), nil)
	wantProblems(t, probs, "InvalidAnnotation auth-signin", "InvalidAnnotation auth-response-headers", "InvalidAnnotation auth-method")
	if a := p.ForwardAuth; a == nil || a.Signin != "" || !slices.Equal(a.ResponseHeaders, []string{"X-User"}) || a.Method != "GET" || p.Denied != "" {
		t.Errorf("partial auth = %+v, denied %q", a, p.Denied)
	}
}
