package ingress

import (
	"io"
	"net/http"
	"testing"
)

// More integration tests of ingress-nginx annotations through the proxy on loopback: the options
// that were only checked by the parser tests.

// TestNginxLimitAllowlist: clients in limit-allowlist (or its old name limit-whitelist) pass both the
// request rate and the connection limit; the others are still limited.
func TestNginxLimitAllowlist(t *testing.T) {
	h := newHarness(t)
	be, release := startSlowBackend(t)
	rps := func(more ...string) map[string]string {
		return nginxAnn(append([]string{"limit-rps", "1", "limit-burst-multiplier", "1"}, more...)...)
	}
	h.apply(merge(
		annotated("allow.example", "web", rps("limit-allowlist", "127.0.0.0/8, ::1"), be.addr),
		annotated("white.example", "web", rps("limit-whitelist", "192.0.2.0/24,127.0.0.1"), be.addr),
		annotated("other.example", "web", rps("limit-allowlist", "192.0.2.0/24"), be.addr),
		// limit-allowlist wins over limit-whitelist, as in ingress-nginx.
		annotated("both.example", "web", rps("limit-allowlist", "192.0.2.0/24", "limit-whitelist", "127.0.0.0/8"), be.addr),
		annotated("conn.example", "web", nginxAnn("limit-connections", "1", "limit-allowlist", "127.0.0.1/32"), be.addr),
	))
	for host, exempt := range map[string]bool{"allow.example": true, "white.example": true, "other.example": false, "both.example": false} {
		refused := 0
		for range 10 {
			resp, _ := h.send("GET", host, "/", nil)
			switch resp.StatusCode {
			case 503:
				refused++
			case 200:
			default:
				t.Errorf("%s: status %d", host, resp.StatusCode)
			}
		}
		if exempt && refused != 0 {
			t.Errorf("%s: %d of 10 requests of an exempt client refused", host, refused)
		}
		if !exempt && refused < 5 {
			t.Errorf("%s: only %d of 10 back-to-back requests refused at 1 rps", host, refused)
		}
	}
	before := be.hits.Load()
	done := make(chan int)
	go func() {
		resp, _ := h.sendTo(&http.Client{}, h.httpURL, "GET", "conn.example", "/slow", nil)
		done <- resp.StatusCode
	}()
	waitFor(t, func() bool { return be.hits.Load() > before })
	for range 3 {
		resp, _ := h.send("GET", "conn.example", "/", nil)
		expectStatus(t, "a concurrent request of an exempt client", resp, 200)
	}
	release()
	if code := <-done; code != 200 {
		t.Errorf("the slow request: %d", code)
	}
}

// TestNginxCORSExposeHeaders: cors-expose-headers reaches the client on the backend's response to an
// allowed origin, in place of one the backend sent (ingress-nginx sets it with more_set_headers).
func TestNginxCORSExposeHeaders(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, "web", false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", "42")
		if r.URL.Path == "/own" {
			w.Header().Set("Access-Control-Expose-Headers", "X-Backend-Own")
			w.Header().Set("Access-Control-Allow-Origin", "*")
			w.Header().Set("Vary", "Accept-Encoding")
		}
		io.WriteString(w, "ok")
	})
	h.apply(merge(
		annotated("api.example", "web", nginxAnn("enable-cors", "true", "cors-allow-origin", "https://app.example",
			"cors-expose-headers", "X-Request-Id, X-Total-Count"), be.addr),
		annotated("plain.example", "web", nginxAnn("enable-cors", "true", "cors-allow-origin", "https://app.example"), be.addr),
	))
	for _, c := range []struct{ what, host, path, origin, want string }{
		{"allowed origin", "api.example", "/", "https://app.example", "X-Request-Id, X-Total-Count"},
		{"backend's own header replaced", "api.example", "/own", "https://app.example", "X-Request-Id, X-Total-Count"},
		{"origin not allowed", "api.example", "/", "https://evil.example", ""},
		{"no Origin", "api.example", "/", "", ""},
		{"no cors-expose-headers", "plain.example", "/", "https://app.example", ""},
		{"not allowed: the backend's own header untouched", "api.example", "/own", "https://evil.example", "X-Backend-Own"},
	} {
		var hdr []string
		if c.origin != "" {
			hdr = []string{"Origin", c.origin}
		}
		resp, body := h.send("GET", c.host, c.path, nil, hdr...)
		expectStatus(t, c.what, resp, 200)
		if body != "ok" || resp.Header.Get("X-Request-Id") != "42" {
			t.Errorf("%s: the backend's response did not come through: %q %v", c.what, body, resp.Header)
		}
		if got := resp.Header.Values("Access-Control-Expose-Headers"); len(got) > 1 || c.want != "" && (len(got) == 0 || got[0] != c.want) || c.want == "" && len(got) != 0 {
			t.Errorf("%s: Access-Control-Expose-Headers %q, want %q", c.what, got, c.want)
		}
		if c.origin == "https://app.example" && c.host == "api.example" {
			if got := resp.Header.Values("Access-Control-Allow-Origin"); len(got) != 1 || got[0] != c.origin {
				t.Errorf("%s: Access-Control-Allow-Origin %q", c.what, got)
			}
			vary := resp.Header.Values("Vary")
			if !contains(vary, "Origin") || c.path == "/own" && !contains(vary, "Accept-Encoding") {
				t.Errorf("%s: Vary %q", c.what, vary)
			}
		}
	}
}

// TestNginxAffinitySameSite: the session-cookie-samesite, -conditional-samesite-none and -secure
// options as a browser receives them in Set-Cookie.
func TestNginxAffinitySameSite(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, "web", false, okHandler)
	sticky := func(more ...string) map[string]string {
		return nginxAnn(append([]string{"affinity", "cookie", "session-cookie-name", "s"}, more...)...)
	}
	h.apply(merge(
		annotated("default.example", "web", sticky(), be.addr),
		annotated("lax.example", "web", sticky("session-cookie-samesite", "Lax"), be.addr),
		annotated("strict.example", "web", sticky("session-cookie-samesite", "strict", "session-cookie-secure", "true"), be.addr),
		annotated("none.example", "web", sticky("session-cookie-samesite", "None"), be.addr),
		annotated("cond.example", "web", sticky("session-cookie-samesite", "None", "session-cookie-conditional-samesite-none", "true"), be.addr),
		annotated("secure.example", "web", sticky("session-cookie-secure", "true"), be.addr),
		annotated("bad.example", "web", sticky("session-cookie-samesite", "sometimes", "session-cookie-secure", "maybe"), be.addr),
	))
	const (
		modern   = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
		chrome60 = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/60.0.3112.113 Safari/537.36"
		ios12    = "Mozilla/5.0 (iPhone; CPU iPhone OS 12_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/12.1.2 Mobile/15E148 Safari/604.1"
	)
	for _, c := range []struct {
		host, ua string
		sameSite http.SameSite
		secure   bool
	}{
		{"default.example", modern, 0, false},
		{"lax.example", modern, http.SameSiteLaxMode, false},
		{"strict.example", modern, http.SameSiteStrictMode, true},
		{"none.example", modern, http.SameSiteNoneMode, true},
		{"none.example", chrome60, http.SameSiteNoneMode, true}, // without the conditional option, every client gets None
		{"cond.example", modern, http.SameSiteNoneMode, true},
		{"cond.example", chrome60, 0, false},
		{"cond.example", ios12, 0, false},
		{"secure.example", modern, 0, true},
		{"bad.example", modern, 0, false},
	} {
		resp, _ := h.send("GET", c.host, "/", nil, "User-Agent", c.ua)
		expectStatus(t, c.host, resp, 200)
		var ck *http.Cookie
		for _, k := range resp.Cookies() {
			if k.Name == "s" {
				ck = k
			}
		}
		if ck == nil {
			t.Errorf("%s (%.40s): no affinity cookie in %q", c.host, c.ua, resp.Header.Values("Set-Cookie"))
			continue
		}
		if ck.SameSite != c.sameSite || ck.Secure != c.secure || !ck.HttpOnly {
			t.Errorf("%s (%.40s): Set-Cookie %q, want SameSite %v, Secure %v, HttpOnly", c.host, c.ua, resp.Header.Get("Set-Cookie"), c.sameSite, c.secure)
		}
		// The cookie routes the client back, whatever its attributes.
		resp, _ = h.send("GET", c.host, "/", nil, "User-Agent", c.ua, "Cookie", "s="+ck.Value)
		if expectStatus(t, c.host+" with the cookie", resp, 200); len(resp.Cookies()) != 0 {
			t.Errorf("%s: cookie set again: %q", c.host, resp.Header.Values("Set-Cookie"))
		}
	}
	if r := h.problemReasons("web.bad.example"); !contains(r, "InvalidAnnotation") {
		t.Errorf("problems of the Ingress with bad cookie options: %v", r)
	}
}
