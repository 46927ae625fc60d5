package ingress

import (
	"crypto/sha1"
	"encoding/base64"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/bcrypt"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/baregate/baregate/internal/cluster"
)

// Integration tests of the ingress-nginx annotations through the proxy on loopback, one per
// annotation group: what a client sees (status, headers, redirects, cookies) and what reaches the
// backend.

func TestNginxRewriteTarget(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, "web", false, echoPath)
	svcs, slices := serviceInputs("web", be.addr)
	rewrite := pathIngress("rewrite", 2, "a.example", "ImplementationSpecific", "/something(/|$)(.*)", "web",
		nginxAnn("rewrite-target", "/$2", "x-forwarded-prefix", "/something"))
	// A plain Ingress of the same host: its literal path joins the host's regular expressions.
	plain := pathIngress("plain", 1, "a.example", "Prefix", "/something/exact/longer-path", "web", nil)
	h.apply(cluster.Inputs{Ingresses: []*networkingv1.Ingress{rewrite, plain}, Services: svcs, EndpointSlices: slices})
	for _, c := range []struct{ path, want, prefix string }{
		{"/something", "/", "/something"},
		{"/something/", "/", "/something"},
		{"/something/new?x=1", "/new?x=1", "/something"},
		{"/SOMETHING/case", "/case", "/something"},                               // nginx ~* is case-insensitive
		{"/something/exact/longer-path/x", "/something/exact/longer-path/x", ""}, // the longer path is tried first
		{"/something/exact/x", "/exact/x", "/something"},
	} {
		resp, _ := h.send("GET", "a.example", c.path, nil)
		expectStatus(t, c.path, resp, 200)
		if got := resp.Header.Get("X-Seen-Path"); got != c.want {
			t.Errorf("%s reached the backend as %q, want %q", c.path, got, c.want)
		}
		if got := resp.Header.Get("X-Seen-Prefix"); got != c.prefix {
			t.Errorf("%s: X-Forwarded-Prefix %q, want %q", c.path, got, c.prefix)
		}
	}
	if resp, _ := h.send("GET", "a.example", "/other", nil); resp.StatusCode != 404 {
		t.Errorf("/other: %d, want 404 (regular expressions are anchored at the start)", resp.StatusCode)
	}
}

func TestNginxBadRegexFallsBack(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, "web", false, echoPath)
	svcs, slices := serviceInputs("web", be.addr)
	bad := pathIngress("bad", 2, "a.example", "ImplementationSpecific", "/x(?=y)", "web", nginxAnn("use-regex", "true"))
	good := pathIngress("good", 1, "b.example", "Prefix", "/", "web", nil)
	h.apply(cluster.Inputs{Ingresses: []*networkingv1.Ingress{bad, good}, Services: svcs, EndpointSlices: slices})
	if resp, _ := h.send("GET", "a.example", "/xy", nil); resp.StatusCode != 404 {
		t.Errorf("a path that is not RE2 matched: %d", resp.StatusCode)
	}
	if resp, _ := h.send("GET", "b.example", "/", nil); resp.StatusCode != 200 {
		t.Errorf("another Ingress suffered: %d", resp.StatusCode)
	}
	if r := h.problemReasons("bad"); !contains(r, "InvalidAnnotation") {
		t.Errorf("problems of the bad Ingress: %v", r)
	}
}

func TestNginxSSLRedirectAndHSTS(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, "web", false, echoPath)
	in := merge(
		annotated("tls.example", "web", nil, be.addr),
		annotated("off.example", "web", nginxAnn("ssl-redirect", "false"), be.addr),
		annotated("force.example", "web", nginxAnn("force-ssl-redirect", "true"), be.addr),
	)
	in.Ingresses[0].Spec.TLS = tlsEntries("tls", "tls.example")
	in.Ingresses[1].Spec.TLS = tlsEntries("tls", "off.example")
	in.Secrets = append(in.Secrets, mustCert(t, "tls-cert", "tls.example", "off.example"))
	h.apply(in)
	resp, _ := h.send("POST", "tls.example", "/a/b?c=d", strings.NewReader("x"))
	expectStatus(t, "plain HTTP to a TLS host", resp, http.StatusPermanentRedirect)
	if loc := resp.Header.Get("Location"); loc != "https://tls.example/a/b?c=d" {
		t.Errorf("Location %q", loc)
	}
	resp, _ = h.send("GET", "off.example", "/", nil)
	expectStatus(t, "ssl-redirect false", resp, 200)
	resp, _ = h.send("GET", "force.example", "/x", nil)
	expectStatus(t, "force-ssl-redirect without a certificate", resp, http.StatusPermanentRedirect)
	resp, _ = h.sendTo(tlsClient("tls.example"), h.httpsURL, "GET", "tls.example", "/", nil)
	expectStatus(t, "HTTPS", resp, 200)
	if got := resp.Header.Get("Strict-Transport-Security"); got != "max-age=31536000; includeSubDomains" {
		t.Errorf("HSTS %q", got)
	}
	resp, _ = h.send("GET", "off.example", "/", nil)
	if got := resp.Header.Get("Strict-Transport-Security"); got != "" {
		t.Errorf("HSTS on plain HTTP: %q", got)
	}
}

func TestNginxRedirects(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, "web", false, echoPath)
	h.apply(merge(
		annotated("root.example", "web", nginxAnn("app-root", "/app"), be.addr),
		annotated("perm.example", "web", nginxAnn("permanent-redirect", "https://new.example$request_uri", "permanent-redirect-code", "308"), be.addr),
		annotated("temp.example", "web", nginxAnn("temporal-redirect", "https://maintenance.example/"), be.addr),
	))
	for _, c := range []struct {
		host, path, loc string
		code            int
	}{
		{"root.example", "/", "http://root.example/app", 302},
		{"perm.example", "/p?q=1", "https://new.example/p?q=1", 308},
		{"temp.example", "/anything", "https://maintenance.example/", 302},
	} {
		resp, _ := h.send("GET", c.host, c.path, nil)
		expectStatus(t, c.host, resp, c.code)
		if got := resp.Header.Get("Location"); got != c.loc {
			t.Errorf("%s: Location %q, want %q", c.host, got, c.loc)
		}
	}
	resp, _ := h.send("GET", "root.example", "/app", nil)
	expectStatus(t, "app-root target", resp, 200)
}

func TestNginxBodySize(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, "web", false, func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Len", itoa(int(n)))
	})
	h.apply(merge(annotated("small.example", "web", nginxAnn("proxy-body-size", "10"), be.addr), annotated("default.example", "web", nil, be.addr)))
	resp, _ := h.send("POST", "small.example", "/", strings.NewReader("0123456789"))
	expectStatus(t, "10 bytes", resp, 200)
	resp, _ = h.send("POST", "small.example", "/", strings.NewReader("0123456789a"))
	expectStatus(t, "11 bytes", resp, 413)
	// A body of unknown length (chunked) is cut off once it passes the limit.
	resp, _ = h.send("POST", "small.example", "/", io.MultiReader(strings.NewReader("0123456789"), strings.NewReader("0123456789")))
	expectStatus(t, "20 bytes chunked", resp, 413)
	resp, _ = h.send("POST", "default.example", "/", strings.NewReader(strings.Repeat("x", 1<<20)))
	expectStatus(t, "1m with the default", resp, 200)
	resp, _ = h.send("POST", "default.example", "/", strings.NewReader(strings.Repeat("x", 1<<20+1)))
	expectStatus(t, "1m+1 with the default", resp, 413)
}

func TestNginxSourceRanges(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, "web", false, okHandler)
	h.apply(merge(
		annotated("in.example", "web", nginxAnn("whitelist-source-range", "10.0.0.0/8, 127.0.0.0/8"), be.addr),
		annotated("out.example", "web", nginxAnn("allowlist-source-range", "10.0.0.0/8"), be.addr),
		annotated("deny.example", "web", nginxAnn("denylist-source-range", "127.0.0.1/32"), be.addr),
		annotated("bad.example", "web", nginxAnn("allowlist-source-range", "10.0.0.0/33"), be.addr),
	))
	for host, want := range map[string]int{"in.example": 200, "out.example": 403, "deny.example": 403, "bad.example": 503} {
		resp, _ := h.send("GET", host, "/", nil)
		expectStatus(t, host, resp, want)
	}
}

func TestNginxCORS(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, "web", false, okHandler)
	h.apply(annotated("api.example", "web", nginxAnn("enable-cors", "true", "cors-allow-origin", "https://app.example, https://*.corp.example",
		"cors-allow-methods", "GET, POST", "cors-max-age", "600"), be.addr))
	resp, _ := h.send("OPTIONS", "api.example", "/", nil, "Origin", "https://x.corp.example", "Access-Control-Request-Method", "POST")
	expectStatus(t, "preflight", resp, 204)
	if resp.Header.Get("Access-Control-Allow-Origin") != "https://x.corp.example" || resp.Header.Get("Access-Control-Allow-Methods") != "GET, POST" ||
		resp.Header.Get("Access-Control-Max-Age") != "600" || resp.Header.Get("Access-Control-Allow-Credentials") != "true" {
		t.Errorf("preflight headers %v", resp.Header)
	}
	if be.hits.Load() != 0 {
		t.Error("the preflight reached the backend")
	}
	resp, _ = h.send("GET", "api.example", "/", nil, "Origin", "https://app.example")
	expectStatus(t, "GET", resp, 200)
	if resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" || resp.Header.Get("X-Backend") != "web" {
		t.Errorf("GET headers %v", resp.Header)
	}
	resp, _ = h.send("GET", "api.example", "/", nil, "Origin", "https://evil.example")
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("an origin not allowed got %q", resp.Header.Get("Access-Control-Allow-Origin"))
	}
}

func TestNginxAffinityCookie(t *testing.T) {
	h := newHarness(t)
	var bes []string
	for _, n := range []string{"a", "b", "c"} {
		bes = append(bes, startBackend(t, n, false, okHandler).addr)
	}
	h.apply(annotated("app.example", "web", nginxAnn("affinity", "cookie", "session-cookie-name", "route", "session-cookie-max-age", "3600"), bes...))
	resp, _ := h.send("GET", "app.example", "/", nil)
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "route" {
			cookie = c
		}
	}
	if cookie == nil || cookie.MaxAge != 3600 || !cookie.HttpOnly || cookie.Path != "/" {
		t.Fatalf("affinity cookie %+v (headers %v)", cookie, resp.Header)
	}
	first := resp.Header.Get("X-Backend")
	for range 12 {
		resp, _ := h.send("GET", "app.example", "/", nil, "Cookie", "route="+cookie.Value)
		if got := resp.Header.Get("X-Backend"); got != first {
			t.Fatalf("sticky request went to %s, not %s", got, first)
		}
		if len(resp.Cookies()) != 0 {
			t.Errorf("cookie set again: %v", resp.Cookies())
		}
	}
	// Without the cookie, requests spread (round robin) and each gets a cookie.
	seen := map[string]bool{}
	for range 6 {
		resp, _ := h.send("GET", "app.example", "/", nil)
		seen[resp.Header.Get("X-Backend")] = true
	}
	if len(seen) != 3 {
		t.Errorf("requests without cookie went to %v", seen)
	}
}

func TestNginxCanary(t *testing.T) {
	h := newHarness(t)
	mainBE := startBackend(t, "main", false, okHandler)
	canBE := startBackend(t, "canary", false, okHandler)
	in := merge(annotated("app.example", "main", nil, mainBE.addr), annotated("app.example", "canary", nginxAnn(
		"canary", "true", "canary-by-header", "X-Canary", "canary-by-cookie", "use_canary", "canary-weight", "30"), canBE.addr))
	h.apply(in)
	if r := h.problemReasons("canary.app.example"); len(r) != 0 {
		t.Errorf("the canary Ingress conflicts: %v", r)
	}
	backend := func(hdr ...string) string {
		resp, _ := h.send("GET", "app.example", "/", nil, hdr...)
		return resp.Header.Get("X-Backend")
	}
	for _, c := range []struct {
		hdr  []string
		want string
	}{
		{[]string{"X-Canary", "always"}, "canary"},
		{[]string{"X-Canary", "never", "Cookie", "use_canary=always"}, "main"}, // the header decides first
		{[]string{"Cookie", "use_canary=always"}, "canary"},
		{[]string{"X-Canary", "other", "Cookie", "use_canary=never"}, "main"},
	} {
		for range 5 {
			if got := backend(c.hdr...); got != c.want {
				t.Fatalf("%v went to %s, want %s", c.hdr, got, c.want)
			}
		}
	}
	// Weight 30: 1000 requests, binomial sd about 14.5; 5 sd either way.
	n := 0
	for range 1000 {
		if backend() == "canary" {
			n++
		}
	}
	if n < 228 || n > 372 {
		t.Errorf("%d of 1000 requests went to the canary with weight 30", n)
	}
}

func TestNginxCanaryWithoutMain(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, "canary", false, okHandler)
	h.apply(annotated("lonely.example", "canary", nginxAnn("canary", "true", "canary-weight", "100"), be.addr))
	resp, _ := h.send("GET", "lonely.example", "/", nil)
	expectStatus(t, "canary without main", resp, 404)
	if r := h.problemReasons("canary.lonely.example"); !contains(r, "CanaryWithoutMainIngress") {
		t.Errorf("problems %v", r)
	}
}

func TestNginxForwardAuth(t *testing.T) {
	h := newHarness(t)
	var seen atomic.Value
	auth := startBackend(t, "auth", false, func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Header.Clone())
		switch r.Header.Get("Authorization") {
		case "Bearer good":
			w.Header().Set("X-Auth-User", "alice")
			w.WriteHeader(200)
		case "Bearer banned":
			w.WriteHeader(403)
		case "Bearer broken":
			w.WriteHeader(502)
		default:
			w.WriteHeader(401)
		}
	})
	be := startBackend(t, "web", false, echoPath)
	authURL := "http://" + auth.addr + "/oauth2/auth"
	h.apply(merge(
		annotated("app.example", "web", nginxAnn("auth-url", authURL, "auth-response-headers", "X-Auth-User"), be.addr),
		annotated("signin.example", "other", nginxAnn("auth-url", authURL, "auth-signin", "https://login.example/start"), be.addr),
	))
	resp, _ := h.send("GET", "app.example", "/private?x=1", nil, "Authorization", "Bearer good")
	expectStatus(t, "authorized", resp, 200)
	if resp.Header.Get("X-Seen-User") != "alice" {
		t.Errorf("auth-response-headers not copied: %v", resp.Header)
	}
	hdr, _ := seen.Load().(http.Header)
	if hdr.Get("X-Original-URL") != "http://app.example/private?x=1" || hdr.Get("X-Original-Method") != "GET" {
		t.Errorf("auth subrequest headers %v", hdr)
	}
	for token, want := range map[string]int{"": 401, "Bearer banned": 403, "Bearer broken": 500} {
		resp, _ := h.send("GET", "app.example", "/", nil, "Authorization", token)
		expectStatus(t, "token "+token, resp, want)
	}
	resp, _ = h.send("GET", "signin.example", "/page", nil)
	expectStatus(t, "signin", resp, 302)
	if loc := resp.Header.Get("Location"); loc != "https://login.example/start?rd="+url.QueryEscape("http://signin.example/page") {
		t.Errorf("signin Location %q", loc)
	}
	if n := be.hits.Load(); n != 1 {
		t.Errorf("the backend saw %d requests, want only the authorized one", n)
	}
}

// TestNginxForwardAuthClusterService: an auth-url naming a cluster Service goes to its endpoints
// directly, with the Host of the URL; without endpoints the request fails closed with 500.
func TestNginxForwardAuthClusterService(t *testing.T) {
	h := newHarness(t)
	var host atomic.Value
	auth := startBackend(t, "auth", false, func(w http.ResponseWriter, r *http.Request) {
		host.Store(r.Host + " " + r.URL.Path)
		w.WriteHeader(200)
	})
	be := startBackend(t, "web", false, okHandler)
	authSvcs, authSlices := serviceInputs("auth", auth.addr)
	in := merge(
		annotated("app.example", "web", nginxAnn("auth-url", "http://auth.default.svc.cluster.local/verify?u=$request_uri"), be.addr),
		annotated("down.example", "web", nginxAnn("auth-url", "http://gone.default.svc/verify"), be.addr),
		cluster.Inputs{Services: authSvcs, EndpointSlices: authSlices},
	)
	gone, _ := serviceInputs("gone")
	in.Services = append(in.Services, gone...)
	h.apply(in)
	resp, _ := h.send("GET", "app.example", "/x", nil)
	expectStatus(t, "auth by a cluster Service", resp, 200)
	if got, _ := host.Load().(string); got != "auth.default.svc.cluster.local /verify" {
		t.Errorf("the auth Service saw %q", got)
	}
	resp, _ = h.send("GET", "down.example", "/x", nil)
	expectStatus(t, "auth Service without endpoints", resp, 500)
}

func TestNginxBasicAuth(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, "web", false, okHandler)
	bob, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	alice := sha1.Sum([]byte("wonder"))
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "users"},
		Data: map[string][]byte{"auth": []byte("bob:" + string(bob) + "\nalice:{SHA}" + base64.StdEncoding.EncodeToString(alice[:]) + "\n")}}
	h.applyWithSecrets(merge(
		annotated("app.example", "web", nginxAnn("auth-type", "basic", "auth-secret", "users", "auth-realm", "Team"), be.addr),
		annotated("nosecret.example", "web", nginxAnn("auth-type", "basic", "auth-secret", "missing"), be.addr),
	), sec)
	resp, _ := h.send("GET", "app.example", "/", nil)
	expectStatus(t, "no credentials", resp, 401)
	if got := resp.Header.Get("WWW-Authenticate"); got != `Basic realm="Team"` {
		t.Errorf("challenge %q", got)
	}
	for _, c := range []struct {
		user, pw string
		want     int
	}{{"bob", "secret", 200}, {"alice", "wonder", 200}, {"bob", "wrong", 401}, {"eve", "secret", 401}} {
		req, _ := http.NewRequest("GET", h.httpURL+"/", nil)
		req.Host = "app.example"
		req.SetBasicAuth(c.user, c.pw)
		resp, err := noRedirects.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		expectStatus(t, c.user+":"+c.pw, resp, c.want)
	}
	resp, _ = h.send("GET", "nosecret.example", "/", nil)
	expectStatus(t, "missing Secret", resp, 503)
}

func TestNginxRateLimits(t *testing.T) {
	h := newHarness(t)
	be, release := startSlowBackend(t)
	h.apply(merge(
		annotated("rps.example", "web", nginxAnn("limit-rps", "1", "limit-burst-multiplier", "1"), be.addr),
		annotated("conn.example", "web", nginxAnn("limit-connections", "1"), be.addr),
	))
	refused := 0
	for range 10 {
		if resp, _ := h.send("GET", "rps.example", "/", nil); resp.StatusCode == 503 {
			refused++
		}
	}
	if refused < 5 {
		t.Errorf("only %d of 10 back-to-back requests refused at 1 rps", refused)
	}
	done := make(chan int)
	go func() {
		resp, _ := h.sendTo(&http.Client{}, h.httpURL, "GET", "conn.example", "/slow", nil)
		done <- resp.StatusCode
	}()
	waitFor(t, func() bool { return be.hits.Load() >= 11-int64(refused) })
	resp, _ := h.send("GET", "conn.example", "/", nil)
	expectStatus(t, "second concurrent request", resp, 503)
	release()
	if code := <-done; code != 200 {
		t.Errorf("first request: %d", code)
	}
	resp, _ = h.send("GET", "conn.example", "/", nil)
	expectStatus(t, "after the first finished", resp, 200)
}

func TestNginxUpstreamHash(t *testing.T) {
	h := newHarness(t)
	var bes []string
	for _, n := range []string{"a", "b", "c", "d"} {
		bes = append(bes, startBackend(t, n, false, okHandler).addr)
	}
	h.apply(annotated("app.example", "web", nginxAnn("upstream-hash-by", "$arg_user"), bes...))
	owners := map[string]bool{}
	for u := range 20 {
		var first string
		for range 4 {
			resp, _ := h.send("GET", "app.example", "/?user=u"+itoa(u), nil)
			got := resp.Header.Get("X-Backend")
			if first == "" {
				first = got
			} else if got != first {
				t.Fatalf("user %d went to %s and %s", u, first, got)
			}
		}
		owners[first] = true
	}
	if len(owners) < 2 {
		t.Errorf("20 users all hashed to %v", owners)
	}
}

func TestNginxUpstreamVhostAliasAndBuffering(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, "web", false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Seen-Host", r.Host)
		io.WriteString(w, "part one,")
		w.(http.Flusher).Flush() // chunked: no Content-Length from the backend
		io.WriteString(w, "part two")
	})
	h.apply(annotated("app.example", "web", nginxAnn("upstream-vhost", "internal.svc", "server-alias", "alias.example, *.wild.example", "proxy-buffering", "on"), be.addr))
	for _, host := range []string{"app.example", "alias.example", "x.wild.example"} {
		resp, body := h.send("GET", host, "/", nil)
		expectStatus(t, host, resp, 200)
		if resp.Header.Get("X-Seen-Host") != "internal.svc" {
			t.Errorf("%s: backend saw Host %q", host, resp.Header.Get("X-Seen-Host"))
		}
		if resp.ContentLength != int64(len("part one,part two")) || body != "part one,part two" {
			t.Errorf("%s: buffered response has length %d, body %q", host, resp.ContentLength, body)
		}
	}
}

func TestNginxCustomErrorsAndDefaultBackend(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, "web", false, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.Error(w, "backend 404", 404)
		}
	})
	errs := startBackend(t, "errors", false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Got-Code", r.Header.Get("X-Code"))
		w.Header().Set("X-Got-Ingress", r.Header.Get("X-Ingress-Name"))
		w.WriteHeader(404)
		io.WriteString(w, "pretty error page")
	})
	ann := nginxAnn("custom-http-errors", "404,503", "default-backend", "errors")
	in := merge(annotated("app.example", "web", ann, be.addr), annotated("errors.internal", "errors", nil, errs.addr),
		annotated("empty.example", "none", nginxAnn("default-backend", "errors"), be.addr))
	in.EndpointSlices = in.EndpointSlices[:2] // Service "none" has no endpoints
	h.apply(in)
	resp, body := h.send("GET", "app.example", "/missing", nil)
	if resp.StatusCode != 404 || body != "pretty error page" || resp.Header.Get("X-Got-Code") != "404" || resp.Header.Get("X-Got-Ingress") != "web.app.example" {
		t.Errorf("custom error: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	resp, _ = h.send("GET", "app.example", "/fine", nil)
	expectStatus(t, "no error", resp, 200)
	resp, body = h.send("GET", "empty.example", "/", nil)
	if body != "pretty error page" {
		t.Errorf("a Service without endpoints was not served by default-backend: %d %q", resp.StatusCode, body)
	}
}

func TestNginxSnippetsWarn(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, "web", false, okHandler)
	h.apply(annotated("app.example", "web", nginxAnn("configuration-snippet", "more_set_headers \"X: y\";", "proxy-body-size", "huge"), be.addr))
	r := h.problemReasons("web.app.example")
	if !contains(r, "SnippetIgnored") || !contains(r, "InvalidAnnotation") {
		t.Errorf("problems %v", r)
	}
	var msg string
	for _, p := range h.ing.Problems() {
		if p.Reason == "SnippetIgnored" {
			msg = p.Message
		}
	}
	if !strings.Contains(msg, "configuration-snippet") || !strings.Contains(msg, "instead") {
		t.Errorf("snippet message %q does not name the annotation and the replacement", msg)
	}
	resp, _ := h.send("POST", "app.example", "/", strings.NewReader(strings.Repeat("x", 1<<20+1)))
	expectStatus(t, "invalid body size falls back to 1m", resp, 413)
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func itoa(n int) string { return strconv.Itoa(n) }
