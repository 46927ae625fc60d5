package annotations

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// RateLimit is limit-rps / limit-rpm / limit-connections per client IP. Requests above the rate (with
// a burst of rate times BurstMultiplier) and connections above the limit get 503, as in ingress-nginx.
type RateLimit struct {
	RPS, RPM, Connections int // 0: that limit is off
	BurstMultiplier       int // default 5
	// Exempt client networks are never limited (limit-allowlist).
	Exempt []netip.Prefix
}

func parseRateLimit(ps *parser, p *Policy, _ Defaults) {
	const maxInt = 1<<31 - 1
	l := &RateLimit{
		RPS:             ps.intOpt("limit-rps", 0, 1, maxInt),
		RPM:             ps.intOpt("limit-rpm", 0, 1, maxInt),
		Connections:     ps.intOpt("limit-connections", 0, 1, maxInt),
		BurstMultiplier: ps.intOpt("limit-burst-multiplier", 5, 1, 1000),
	}
	name := "limit-allowlist"
	v, ok := ps.get(name)
	if wv, wok := ps.get("limit-whitelist"); wok && !ok {
		name, v, ok = "limit-whitelist", wv, true
	}
	if ok {
		if r, err := ParseCIDRList(v); err != nil {
			ps.invalid(name, err, "no client is exempt")
		} else {
			l.Exempt = r
		}
	}
	if l.RPS == 0 && l.RPM == 0 && l.Connections == 0 {
		return
	}
	p.RateLimit = l
}

// Exempted reports whether a client is never limited.
func (l *RateLimit) Exempted(ip netip.Addr) bool { return inAny(l.Exempt, ip.Unmap().WithZone("")) }

// HSTS is the Strict-Transport-Security header sent on HTTPS responses (ingress-nginx ConfigMap keys
// hsts, hsts-max-age, hsts-include-subdomains, hsts-preload).
type HSTS struct {
	Enabled           bool
	MaxAge            time.Duration
	IncludeSubdomains bool
	Preload           bool
}

// Header is the header value, or "" when disabled.
func (h HSTS) Header() string {
	if !h.Enabled {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "max-age=%d", int64(h.MaxAge/time.Second))
	if h.IncludeSubdomains {
		b.WriteString("; includeSubDomains")
	}
	if h.Preload {
		b.WriteString("; preload")
	}
	return b.String()
}
