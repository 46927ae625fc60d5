package annotations

import (
	"fmt"
	"net/http"
	"regexp"
)

// Canary marks an Ingress as the canary of the non-canary Ingress with the same host and path:
// requests go to its backend when Decide says so.
type Canary struct {
	Header        string // canary-by-header: "always"/"never", or compared with HeaderValue/HeaderPattern
	HeaderValue   string
	HeaderPattern *regexp.Regexp
	Cookie        string // canary-by-cookie: "always"/"never"
	Weight        int    // canary-weight, out of WeightTotal
	WeightTotal   int    // canary-weight-total, default 100
}

func parseCanary(ps *parser, p *Policy, _ Defaults) {
	if !ps.boolOpt("canary", false) {
		return
	}
	c := &Canary{WeightTotal: ps.intOpt("canary-weight-total", 100, 1, 1<<31-1)}
	c.Weight = ps.intOpt("canary-weight", 0, 0, 1<<31-1)
	if c.Weight > c.WeightTotal {
		ps.invalid("canary-weight", fmt.Errorf("%d is more than canary-weight-total %d", c.Weight, c.WeightTotal), "sending all weighted traffic to the canary")
		c.Weight = c.WeightTotal
	}
	if v, ok := ps.get("canary-by-header"); ok {
		if isToken(v) {
			c.Header = http.CanonicalHeaderKey(v)
		} else {
			ps.invalid("canary-by-header", fmt.Errorf("%q is not a header name", v), "requests are not routed by header")
		}
	}
	if v, ok := ps.get("canary-by-header-value"); ok && c.Header != "" {
		c.HeaderValue = v
	}
	if v, ok := ps.get("canary-by-header-pattern"); ok && c.Header != "" && c.HeaderValue == "" {
		if re, err := regexp.Compile(v); err != nil {
			ps.invalid("canary-by-header-pattern", fmt.Errorf("%q is not an RE2 regular expression: %w", v, err), "the header pattern matches nothing")
		} else {
			c.HeaderPattern = re
		}
	}
	if v, ok := ps.get("canary-by-cookie"); ok {
		if err := CheckCookieName(v); err != nil {
			ps.invalid("canary-by-cookie", err, "requests are not routed by cookie")
		} else {
			c.Cookie = v
		}
	}
	p.Canary = c
}

// Decide reports whether a request goes to the canary, in ingress-nginx's order. The header first:
// with a HeaderValue (or else a HeaderPattern) a match means canary and anything else falls through;
// without either, "always" and "never" decide and other values fall through. Then the cookie:
// "always" and "never" decide. Then the weight: randn(n) must return a uniform integer in [0, n).
func (c *Canary) Decide(h http.Header, randn func(n int) int) bool {
	if c.Header != "" {
		if vals, ok := h[c.Header]; ok && len(vals) > 0 {
			v := vals[0]
			switch {
			case c.HeaderValue != "":
				if v == c.HeaderValue {
					return true
				}
			case c.HeaderPattern != nil:
				if c.HeaderPattern.MatchString(v) {
					return true
				}
			case v == "always":
				return true
			case v == "never":
				return false
			}
		}
	}
	if c.Cookie != "" {
		if ck, err := (&http.Request{Header: h}).Cookie(c.Cookie); err == nil {
			switch ck.Value {
			case "always":
				return true
			case "never":
				return false
			}
		}
	}
	if c.Weight <= 0 {
		return false
	}
	if c.Weight >= c.WeightTotal {
		return true
	}
	return randn(c.WeightTotal) < c.Weight
}
