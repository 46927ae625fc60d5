package annotations

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

func parseRewrite(ps *parser, p *Policy, _ Defaults) {
	p.UseRegex = ps.boolOpt("use-regex", false)
	if v, ok := ps.get("x-forwarded-prefix"); ok {
		if err := CheckCookiePath(v); err != nil || strings.ContainsAny(v, " \t$") {
			ps.invalid("x-forwarded-prefix", fmt.Errorf("%q is not a path", v), "no X-Forwarded-Prefix is sent")
		} else {
			p.XForwardedPrefix = v
		}
	}
	if v, ok := ps.get("upstream-vhost"); ok {
		host, port, hasPort := strings.Cut(v, ":")
		errs := validation.IsDNS1123Subdomain(strings.ToLower(host))
		if _, err := parseInt(port, 1, 65535); hasPort && err != nil {
			errs = append(errs, "bad port")
		}
		if len(errs) > 0 {
			ps.invalid("upstream-vhost", errFromList(v, errs), "the client's Host header is sent")
		} else {
			p.UpstreamVhost = v
		}
	}
	if t, ok := ps.get("rewrite-target"); ok {
		if err := checkRewriteTarget(t); err != nil {
			ps.invalid("rewrite-target", err, "requests are passed on without rewriting")
		} else {
			p.RewriteTarget = t
			p.UseRegex = true
		}
	}
	if !p.UseRegex {
		return
	}
	// Report bad paths on the annotation that made them regular expressions.
	reason := "rewrite-target"
	if _, ok := ps.get("use-regex"); ok {
		reason = "use-regex"
	}
	p.regexps = map[string]*regexp.Regexp{}
	for _, rule := range ps.ing.Spec.Rules {
		if rule.HTTP == nil {
			continue
		}
		for _, path := range rule.HTTP.Paths {
			if _, done := p.regexps[path.Path]; done {
				continue
			}
			re, err := CompilePathRegex(path.Path)
			if err != nil {
				ps.invalid(reason, err, "this path matches no request")
			}
			p.regexps[path.Path] = re
		}
	}
}

// CompilePathRegex reads an Ingress path as ingress-nginx does with use-regex (nginx location ~*):
// case-insensitive and anchored at the start, but not at the end. RE2 has no backreferences or
// lookaround, so PCRE-only paths are refused instead of being matched differently.
func CompilePathRegex(path string) (*regexp.Regexp, error) {
	if !strings.HasPrefix(path, "/") {
		return nil, fmt.Errorf("path %q does not start with /", path)
	}
	re, err := regexp.Compile("(?i)^(?:" + path + ")")
	if err != nil {
		return nil, fmt.Errorf("path %q is not an RE2 regular expression: %w", path, err)
	}
	return re, nil
}

// checkRewriteTarget accepts a path made of literal text and $0..$9 references (${1} too). nginx
// variables other than capture groups and a query string are not supported: they would silently turn
// into literal text.
func checkRewriteTarget(t string) error {
	if t == "" {
		return errors.New("empty rewrite target")
	}
	if strings.ContainsAny(t, "?#") {
		return fmt.Errorf("rewrite target %q has a query or fragment, which baregate does not support", t)
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if c <= ' ' || c == 0x7f {
			return fmt.Errorf("rewrite target %q contains a control character or space", t)
		}
		if c != '$' {
			continue
		}
		if _, n := groupRef(t[i:]); n > 0 {
			i += n - 1
			continue
		}
		return fmt.Errorf("rewrite target %q: only $0..$9 capture groups may follow $", t)
	}
	if t[0] != '/' && t[0] != '$' {
		return fmt.Errorf("rewrite target %q must start with / or a capture group", t)
	}
	return nil
}

// groupRef reads "$N" or "${N}" at the start of s, returning the group and the length consumed (0 if
// s does not start with one).
func groupRef(s string) (group, n int) {
	if len(s) >= 2 && s[0] == '$' && s[1] >= '0' && s[1] <= '9' {
		return int(s[1] - '0'), 2
	}
	if len(s) >= 4 && s[0] == '$' && s[1] == '{' && s[2] >= '0' && s[2] <= '9' && s[3] == '}' {
		return int(s[2] - '0'), 4
	}
	return 0, 0
}

// MatchPath reports whether a request path matches the Ingress path match, read as a regular
// expression. It is only meaningful when UseRegex is set; a path that did not compile matches nothing.
func (p *Policy) MatchPath(path, match string) bool {
	re := p.regexps[match]
	return re != nil && re.MatchString(path)
}

// Rewrite returns the path to send upstream for a request path that matched the Ingress path match.
// As with nginx's "rewrite regex target break", the whole path is replaced by the target with the
// capture groups filled in (a missing group is empty); a path that does not match is left alone. The
// result always starts with "/": "//" runs that empty groups leave behind are kept, as nginx does.
func (p *Policy) Rewrite(path, match string) string {
	if p.RewriteTarget == "" {
		return path
	}
	re := p.regexps[match]
	if re == nil {
		return path
	}
	m := re.FindStringSubmatchIndex(path)
	if m == nil {
		return path
	}
	var b strings.Builder
	t := p.RewriteTarget
	for i := 0; i < len(t); i++ {
		if g, n := groupRef(t[i:]); n > 0 {
			if 2*g+1 < len(m) && m[2*g] >= 0 {
				b.WriteString(path[m[2*g]:m[2*g+1]])
			}
			i += n - 1
			continue
		}
		b.WriteByte(t[i])
	}
	out := b.String()
	if !strings.HasPrefix(out, "/") {
		out = "/" + out
	}
	return out
}
