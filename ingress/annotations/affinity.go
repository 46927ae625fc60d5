package annotations

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Affinity is affinity: cookie with its session-cookie-* options: a client keeps going to the endpoint
// named in its cookie.
type Affinity struct {
	// Mode is "balanced" (default: may move sessions when endpoints scale) or "persistent".
	Mode string
	Name string // default INGRESSCOOKIE
	// Path is the cookie path; empty means the path of the matched Ingress rule, as ingress-nginx does.
	Path     string
	Expires  time.Duration // 0: no Expires attribute
	MaxAge   time.Duration // 0: no Max-Age attribute (a session cookie when Expires is unset too)
	SameSite http.SameSite // 0: no SameSite attribute
	// ConditionalSameSiteNone drops SameSite=None for clients known to mishandle it.
	ConditionalSameSiteNone bool
	Secure                  bool
	// ChangeOnFailure picks a new endpoint (and cookie) when the one named is gone.
	ChangeOnFailure bool
}

func parseAffinity(ps *parser, p *Policy, _ Defaults) {
	v, ok := ps.get("affinity")
	if !ok {
		return
	}
	if v != "cookie" {
		ps.invalid("affinity", fmt.Errorf("%q is not a supported affinity (only cookie)", v), "no session affinity")
		return
	}
	a := &Affinity{Mode: "balanced", Name: "INGRESSCOOKIE"}
	if v, ok := ps.get("affinity-mode"); ok {
		if v == "balanced" || v == "persistent" {
			a.Mode = v
		} else {
			ps.invalid("affinity-mode", fmt.Errorf("%q is neither balanced nor persistent", v), "using balanced")
		}
	}
	if v, ok := ps.get("session-cookie-name"); ok {
		if err := CheckCookieName(v); err != nil {
			ps.invalid("session-cookie-name", err, "using INGRESSCOOKIE")
		} else {
			a.Name = v
		}
	}
	if v, ok := ps.get("session-cookie-path"); ok {
		if err := CheckCookiePath(v); err != nil {
			ps.invalid("session-cookie-path", err, "using the rule's path")
		} else {
			a.Path = v
		}
	}
	a.Expires = time.Duration(ps.intOpt("session-cookie-expires", 0, 1, 1<<31-1)) * time.Second
	a.MaxAge = time.Duration(ps.intOpt("session-cookie-max-age", 0, 1, 1<<31-1)) * time.Second
	if v, ok := ps.get("session-cookie-samesite"); ok {
		if s, err := ParseSameSite(v); err != nil {
			ps.invalid("session-cookie-samesite", err, "no SameSite attribute")
		} else {
			a.SameSite = s
		}
	}
	a.ConditionalSameSiteNone = ps.boolOpt("session-cookie-conditional-samesite-none", false)
	a.Secure = ps.boolOpt("session-cookie-secure", false)
	a.ChangeOnFailure = ps.boolOpt("session-cookie-change-on-failure", false)
	p.Affinity = a
}

// CheckCookieName accepts an RFC 6265 cookie name (an HTTP token).
func CheckCookieName(v string) error {
	if !isToken(v) {
		return fmt.Errorf("%q is not a valid cookie name", v)
	}
	return nil
}

// CheckCookiePath accepts a URL path (RFC 3986 path characters, starting with "/"). RFC 6265 would
// allow more, but browsers and Go's own cookie parser drop paths with quotes or spaces.
func CheckCookiePath(v string) error {
	if !strings.HasPrefix(v, "/") {
		return fmt.Errorf("path %q does not start with /", v)
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("/-._~!$&'()*+,=:@%", c) >= 0
		if !ok {
			return fmt.Errorf("path %q contains %q", v, c)
		}
	}
	return nil
}

// ParseSameSite reads None, Lax or Strict (any case).
func ParseSameSite(v string) (http.SameSite, error) {
	switch strings.ToLower(v) {
	case "none":
		return http.SameSiteNoneMode, nil
	case "lax":
		return http.SameSiteLaxMode, nil
	case "strict":
		return http.SameSiteStrictMode, nil
	}
	return 0, fmt.Errorf("%q is not one of None, Lax, Strict", v)
}

// Cookie is the affinity cookie naming value (the proxy's opaque endpoint key) for a request that
// matched an Ingress rule with path routePath, at time now. userAgent feeds
// ConditionalSameSiteNone. Secure is set when configured, and always with SameSite=None, which
// browsers require.
func (a *Affinity) Cookie(value, routePath, userAgent string, now time.Time) *http.Cookie {
	c := &http.Cookie{Name: a.Name, Value: value, Path: a.Path, HttpOnly: true, Secure: a.Secure, SameSite: a.SameSite}
	if c.Path == "" {
		c.Path = routePath
	}
	if c.Path == "" {
		c.Path = "/"
	}
	if a.Expires > 0 {
		c.Expires = now.Add(a.Expires).UTC()
	}
	if a.MaxAge > 0 {
		c.MaxAge = int(a.MaxAge / time.Second)
	}
	if c.SameSite == http.SameSiteNoneMode {
		if a.ConditionalSameSiteNone && sameSiteNoneIncompatible(userAgent) {
			c.SameSite = 0
		} else {
			c.Secure = true
		}
	}
	return c
}

// sameSiteNoneIncompatible spots the clients that reject or misread SameSite=None (Chrome 51-66, iOS
// 12 Safari and embedded browsers, macOS 10.14 Safari), as ingress-nginx's check does, coarsely.
func sameSiteNoneIncompatible(ua string) bool {
	if strings.Contains(ua, "iPhone OS 12_") || strings.Contains(ua, "iPad; CPU OS 12_") ||
		strings.Contains(ua, "Macintosh; Intel Mac OS X 10_14") && strings.Contains(ua, "Version/") && strings.Contains(ua, "Safari") {
		return true
	}
	for v := 51; v <= 66; v++ {
		if strings.Contains(ua, fmt.Sprintf("Chrome/%d.", v)) || strings.Contains(ua, fmt.Sprintf("Chromium/%d.", v)) {
			return true
		}
	}
	return false
}
