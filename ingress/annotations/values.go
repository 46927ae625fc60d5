package annotations

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// boolOpt reads a boolean option as ingress-nginx does (strconv.ParseBool); invalid keeps def.
func (ps *parser) boolOpt(name string, def bool) bool {
	v, ok := ps.get(name)
	if !ok {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		ps.invalid(name, fmt.Errorf("%q is not a boolean", v), fmt.Sprintf("using the default %t", def))
		return def
	}
	return b
}

// intOpt reads a decimal integer in [lo, hi]; invalid keeps def.
func (ps *parser) intOpt(name string, def, lo, hi int) int {
	v, ok := ps.get(name)
	if !ok {
		return def
	}
	n, err := parseInt(v, lo, hi)
	if err != nil {
		ps.invalid(name, err, fmt.Sprintf("using the default %d", def))
		return def
	}
	return n
}

func parseInt(v string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("%q is not a decimal integer", v)
	}
	if n < lo || n > hi {
		return 0, fmt.Errorf("%d is outside %d..%d", n, lo, hi)
	}
	return n, nil
}

// durationOpt reads an nginx time value; invalid keeps def.
func (ps *parser) durationOpt(name string, def time.Duration) time.Duration {
	v, ok := ps.get(name)
	if !ok {
		return def
	}
	d, err := ParseNginxDuration(v)
	if err == nil && d <= 0 {
		err = fmt.Errorf("%q is not a positive time", v)
	}
	if err != nil {
		ps.invalid(name, err, fmt.Sprintf("using the default %s", def))
		return def
	}
	return d
}

// ParseSize reads an nginx size ("1024", "8k", "1m", "2G"): bytes, kibibytes, mebibytes or gibibytes.
func ParseSize(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("empty size")
	}
	mult := int64(1)
	num := s
	switch s[len(s)-1] {
	case 'k', 'K':
		mult, num = 1<<10, s[:len(s)-1]
	case 'm', 'M':
		mult, num = 1<<20, s[:len(s)-1]
	case 'g', 'G':
		mult, num = 1<<30, s[:len(s)-1]
	}
	n, err := parseDigits(num)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return n * mult, nil
}

// parseDigits accepts only ASCII digits (no sign, no spaces), as nginx does.
func parseDigits(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("no number")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%q is not a number", s)
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, errors.New("number too large")
	}
	return n, nil
}

// nginxUnits are nginx's time units; a bare number is seconds.
var nginxUnits = []struct {
	suffix string
	d      time.Duration
}{
	{"ms", time.Millisecond}, {"s", time.Second}, {"m", time.Minute}, {"h", time.Hour},
	{"d", 24 * time.Hour}, {"w", 7 * 24 * time.Hour}, {"M", 30 * 24 * time.Hour}, {"y", 365 * 24 * time.Hour},
}

// ParseNginxDuration reads an nginx time ("60", "5s", "1m30s", "1h 30m", "500ms"). Units must come
// in decreasing order and each at most once, as nginx requires.
func ParseNginxDuration(s string) (time.Duration, error) {
	rest := strings.TrimSpace(s)
	if rest == "" {
		return 0, errors.New("empty time")
	}
	var total time.Duration
	last := -1
	for rest != "" {
		i := 0
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		n, err := parseDigits(rest[:i])
		if err != nil {
			return 0, fmt.Errorf("time %q: %w", s, err)
		}
		rest = rest[i:]
		unit := -1
		for u, nu := range nginxUnits {
			if strings.HasPrefix(rest, nu.suffix) && (nu.suffix != "m" || !strings.HasPrefix(rest, "ms")) {
				unit = u
				break
			}
		}
		d := time.Second
		switch {
		case unit >= 0:
			d = nginxUnits[unit].d
			rest = rest[len(nginxUnits[unit].suffix):]
		case rest != "" && rest[0] != ' ':
			return 0, fmt.Errorf("time %q: unknown unit", s)
		}
		if unit < 0 {
			unit = 1 // seconds
			if rest != "" {
				return 0, fmt.Errorf("time %q: only the last part may omit its unit", s)
			}
		}
		if last >= 0 && nginxUnits[unit].d >= nginxUnits[last].d {
			return 0, fmt.Errorf("time %q: units must decrease", s)
		}
		last = unit
		if n > int64(math.MaxInt64/d) || total > math.MaxInt64-time.Duration(n)*d {
			return 0, fmt.Errorf("time %q is too large", s)
		}
		total += time.Duration(n) * d
		rest = strings.TrimLeft(rest, " ")
	}
	return total, nil
}

// ParseCIDRList reads a comma-separated list of networks or single addresses ("10.0.0.0/8, 192.0.2.1,
// 2001:db8::/32"). Host bits set in a network are an error, as they usually mean a typo.
func ParseCIDRList(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range splitList(s) {
		var p netip.Prefix
		if strings.Contains(f, "/") {
			var err error
			if p, err = netip.ParsePrefix(f); err != nil {
				return nil, fmt.Errorf("%q is not a network: %w", f, err)
			}
			if p.Masked() != p {
				return nil, fmt.Errorf("%q has host bits set (did you mean %s?)", f, p.Masked())
			}
		} else {
			a, err := netip.ParseAddr(f)
			if err != nil || a.Zone() != "" {
				return nil, fmt.Errorf("%q is not an address or network (without zone)", f)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, errors.New("no networks listed")
	}
	return out, nil
}

// splitList splits a comma-separated annotation value, trimming spaces and dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// isToken reports whether s is an HTTP token (RFC 9110 5.6.2): header names, methods, cookie names.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

var errEmptyList = errors.New("empty list")

// errFromList joins apimachinery validation messages into one error about value v.
func errFromList(v string, msgs []string) error {
	return fmt.Errorf("%q: %s", v, strings.Join(msgs, "; "))
}
