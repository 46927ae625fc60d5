package annotations

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// CORS is enable-cors with its cors-* options, defaulted as ingress-nginx does.
type CORS struct {
	// AllowOrigins are exact origins ("https://a.example:8443"), origins with a wildcard first label
	// ("https://*.example.com") or "*" (any origin).
	AllowOrigins     []string
	AllowMethods     string
	AllowHeaders     string
	ExposeHeaders    string
	AllowCredentials bool
	MaxAge           int // seconds
}

const (
	defaultCORSMethods = "GET, PUT, POST, DELETE, PATCH, OPTIONS"
	defaultCORSHeaders = "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization"
	defaultCORSMaxAge  = 1728000
)

func parseCORS(ps *parser, p *Policy, _ Defaults) {
	if !ps.boolOpt("enable-cors", false) {
		return
	}
	c := &CORS{AllowOrigins: []string{"*"}, AllowMethods: defaultCORSMethods, AllowHeaders: defaultCORSHeaders,
		AllowCredentials: ps.boolOpt("cors-allow-credentials", true), MaxAge: ps.intOpt("cors-max-age", defaultCORSMaxAge, 0, 1<<31-1)}
	if v, ok := ps.get("cors-allow-origin"); ok {
		if origins, err := ParseOrigins(v); err != nil {
			ps.invalid("cors-allow-origin", err, "no origin is allowed")
			c.AllowOrigins = nil
		} else {
			c.AllowOrigins = origins
		}
	}
	for _, o := range []struct {
		name     string
		dst      *string
		wildcard bool
		check    func(string) bool
	}{
		{"cors-allow-methods", &c.AllowMethods, false, isToken},
		{"cors-allow-headers", &c.AllowHeaders, true, isToken},
		{"cors-expose-headers", &c.ExposeHeaders, true, isToken},
	} {
		v, ok := ps.get(o.name)
		if !ok {
			continue
		}
		items := splitList(v)
		bad := len(items) == 0
		for _, it := range items {
			if !(o.check(it) || o.wildcard && it == "*") {
				bad = true
			}
		}
		if bad {
			ps.invalid(o.name, fmt.Errorf("%q is not a comma-separated list of tokens", v), "using the default")
			continue
		}
		*o.dst = strings.Join(items, ", ")
	}
	p.CORS = c
}

// ParseOrigins reads cors-allow-origin: comma-separated origins, each "*", scheme://host[:port] or
// scheme://*.domain[:port].
func ParseOrigins(v string) ([]string, error) {
	items := splitList(v)
	if len(items) == 0 {
		return nil, errEmptyList
	}
	var out []string
	for _, o := range items {
		if o == "*" {
			out = append(out, o)
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil || u.Fragment != "" {
			return nil, fmt.Errorf("%q is not an origin (scheme://host[:port])", o)
		}
		host := strings.TrimPrefix(u.Hostname(), "*.")
		if strings.Contains(host, "*") || host == "" {
			return nil, fmt.Errorf("%q: a wildcard may only be the whole first label", o)
		}
		if port := u.Port(); port != "" {
			if _, err := parseInt(port, 1, 65535); err != nil {
				return nil, fmt.Errorf("%q: bad port", o)
			}
		}
		out = append(out, strings.ToLower(o))
	}
	return out, nil
}

// allows reports whether a request Origin is allowed, and the value for Access-Control-Allow-Origin.
func (c *CORS) allows(origin string) (string, bool) {
	lo := strings.ToLower(origin)
	for _, o := range c.AllowOrigins {
		if o == "*" {
			if origin == "" {
				return "*", true
			}
			return origin, true
		}
		if origin == "" {
			continue
		}
		if lo == o {
			return origin, true
		}
		if scheme, rest, ok := strings.Cut(o, "://*."); ok {
			if r, ok := strings.CutPrefix(lo, scheme+"://"); ok {
				if i := strings.IndexByte(r, '.'); i > 0 && r[i+1:] == rest {
					return origin, true
				}
			}
		}
	}
	return "", false
}

// Headers returns the CORS headers for a request, and whether the proxy must answer it itself with
// 204 as a preflight (an OPTIONS request from an allowed origin) instead of forwarding it. A request
// from an origin not allowed gets no CORS headers and is forwarded unchanged, as in ingress-nginx.
// With "*" the request's own origin is echoed, so that credentials keep working.
func (c *CORS) Headers(method string, req http.Header) (http.Header, bool) {
	origin, ok := c.allows(req.Get("Origin"))
	if !ok {
		return nil, false
	}
	h := http.Header{}
	h.Set("Access-Control-Allow-Origin", origin)
	if origin != "*" {
		h.Set("Vary", "Origin")
	}
	if c.AllowCredentials {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	h.Set("Access-Control-Allow-Methods", c.AllowMethods)
	h.Set("Access-Control-Allow-Headers", c.AllowHeaders)
	if c.ExposeHeaders != "" {
		h.Set("Access-Control-Expose-Headers", c.ExposeHeaders)
	}
	if method != http.MethodOptions {
		return h, false
	}
	h.Set("Access-Control-Max-Age", strconv.Itoa(c.MaxAge))
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Length", "0")
	return h, true
}
