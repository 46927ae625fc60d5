package annotations

import (
	"net/netip"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

func parseSourceRanges(ps *parser, p *Policy, _ Defaults) {
	name := "allowlist-source-range"
	v, ok := ps.get(name)
	if wv, wok := ps.get("whitelist-source-range"); wok {
		if ok {
			ps.problem("whitelist-source-range", "ConflictingAnnotation", "ignored: allowlist-source-range, its successor, is set too")
		} else {
			name, v, ok = "whitelist-source-range", wv, true
		}
	}
	if ok {
		if ranges, err := ParseCIDRList(v); err != nil {
			ps.invalid(name, err, "every client is refused until it is fixed")
			p.Denied = "invalid " + name
		} else {
			p.AllowSourceRange = ranges
		}
	}
	if v, ok := ps.get("denylist-source-range"); ok {
		if ranges, err := ParseCIDRList(v); err != nil {
			ps.invalid("denylist-source-range", err, "every client is refused until it is fixed")
			p.Denied = "invalid denylist-source-range"
		} else {
			p.DenySourceRange = ranges
		}
	}
}

// SourceAllowed reports whether a client address may use the route: not in DenySourceRange and, when
// AllowSourceRange is set, in it. IPv4-mapped IPv6 clients count as their IPv4 address.
func (p *Policy) SourceAllowed(ip netip.Addr) bool {
	ip = ip.Unmap().WithZone("")
	if inAny(p.DenySourceRange, ip) {
		return false
	}
	return p.AllowSourceRange == nil || inAny(p.AllowSourceRange, ip)
}

func inAny(ranges []netip.Prefix, ip netip.Addr) bool {
	return slices.ContainsFunc(ranges, func(r netip.Prefix) bool { return r.Contains(ip) })
}

func parseErrors(ps *parser, p *Policy, _ Defaults) {
	if v, ok := ps.get("custom-http-errors"); ok {
		codes, err := parseCodes(v)
		if err != nil {
			ps.invalid("custom-http-errors", err, "backend errors are passed on unchanged")
		} else {
			p.CustomHTTPErrors = codes
		}
	}
	if v, ok := ps.get("default-backend"); ok {
		name, port, hasPort := strings.Cut(v, ":")
		errs := validation.IsDNS1035Label(name)
		if hasPort {
			if _, err := parseInt(port, 1, 65535); err != nil && len(validation.IsValidPortName(port)) > 0 {
				errs = append(errs, "port must be a number or a port name")
			}
		}
		if len(errs) > 0 {
			ps.invalid("default-backend", errFromList(v, errs), "no default backend")
		} else {
			p.DefaultBackend = v
		}
	}
}

func parseCodes(v string) ([]int, error) {
	var codes []int
	for _, f := range splitList(v) {
		n, err := parseInt(f, 400, 599)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(codes, n) {
			codes = append(codes, n)
		}
	}
	if len(codes) == 0 {
		return nil, errEmptyList
	}
	slices.Sort(codes)
	return codes, nil
}

func parseServerAlias(ps *parser, p *Policy, _ Defaults) {
	v, ok := ps.get("server-alias")
	if !ok {
		return
	}
	for _, h := range splitList(v) {
		h = strings.ToLower(h)
		name := strings.TrimPrefix(h, "*.")
		if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
			ps.invalid("server-alias", errFromList(h, errs), "this alias is not served")
			continue
		}
		if !slices.Contains(p.ServerAliases, h) {
			p.ServerAliases = append(p.ServerAliases, h)
		}
	}
}
