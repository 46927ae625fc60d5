package route

import (
	"cmp"
	"regexp"
	"slices"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/baregate/baregate/ingress/annotations"
)

// The route table features of ingress-nginx annotations: regular-expression paths (use-regex,
// rewrite-target), canary Ingresses and server aliases.

// regexKey is the key a regular-expression path is stored under in a host's prefix map; the NUL
// keeps it apart from literal paths, which no request path can equal.
func regexKey(path string) string { return "\x00re:" + path }

// orderRegexHosts prepares every host that has a regular-expression path for matching as
// ingress-nginx does: once one Ingress of a host uses regular expressions, nginx matches every
// non-Exact path of that host as a case-insensitive regular expression anchored at the start, the
// longest path first (ingress-nginx sorts locations by path length), the first match winning. Literal
// paths of the other Ingresses become such expressions with their characters quoted.
func (s *buildState) orderRegexHosts() {
	each := func(hr *hostRoutes) {
		if hr == nil || !hr.hasRegex {
			return
		}
		for _, r := range hr.prefix {
			src := r.Path
			if !r.Regex {
				src = regexp.QuoteMeta(r.Path)
			}
			if src == "" {
				src = "/"
			}
			r.re, _ = annotations.CompilePathRegex(src) // a failure was reported by the parser; r matches nothing
			hr.ordered = append(hr.ordered, r)
		}
		slices.SortFunc(hr.ordered, func(a, b *Route) int {
			return cmp.Or(cmp.Compare(len(b.Path), len(a.Path)), cmp.Compare(a.ID, b.ID))
		})
	}
	for _, hr := range s.t.exact {
		each(hr)
	}
	for _, hr := range s.t.wildcard {
		each(hr)
	}
	each(s.t.anyHost)
}

// lookupHost returns the routes of a rule host if any rule created them.
func (s *buildState) lookupHost(host string) *hostRoutes {
	switch {
	case host == "":
		return s.t.anyHost
	case strings.HasPrefix(host, "*."):
		return s.t.wildcard[host[2:]]
	}
	return s.t.exact[host]
}

// addCanary attaches the paths of a canary Ingress to the routes of the main Ingress with the same
// host and path, as ingress-nginx does; a canary path without a main route serves nothing.
func (s *buildState) addCanary(ing *networkingv1.Ingress, policy *Policy) {
	key := types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}
	for _, rule := range ing.Spec.Rules {
		host := strings.ToLower(rule.Host)
		if rule.HTTP == nil {
			continue
		}
		for _, p := range rule.HTTP.Paths {
			kind := matchKind(p.PathType)
			var main *Route
			if hr := s.lookupHost(host); hr != nil {
				byPath := hr.paths(kind)
				main = byPath[pathKey(kind, p.Path)]
				if main == nil && kind == Prefix {
					main = byPath[regexKey(p.Path)]
				}
			}
			switch {
			case main == nil:
				s.problem(ing, "CanaryWithoutMainIngress", "canary path %q of host %q is ignored: no non-canary Ingress routes that host and path", p.Path, displayHost(host))
			case main.Canary != nil:
				s.problem(ing, "CanaryConflict", "canary path %q of host %q is ignored: Ingress %s is already its canary", p.Path, displayHost(host), main.Canary.Ingress)
			default:
				c := &Route{Host: main.Host, Path: p.Path, PathType: pathTypeName(p.PathType), Regex: main.Regex, Ingress: key, Policy: policy, Backend: s.backend(ing, p.Backend)}
				s.addRoute(c)
				main.Canary = c
			}
		}
	}
	if ing.Spec.DefaultBackend != nil {
		s.problem(ing, "CanaryDefaultBackend", "spec.defaultBackend of a canary Ingress is ignored")
	}
	for _, t := range ing.Spec.TLS {
		s.addTLS(ing, t)
	}
}

type aliasRequest struct {
	ing     *networkingv1.Ingress
	host    string // the rule host the aliases stand for
	aliases []string
	quiet   bool // a from-to-www twin: a rule host of its own wins without a Problem
}

// noteAliases records the server-alias names of an Ingress, and for from-to-www-redirect the www.
// (or bare) twin of each rule host, which the proxy then redirects.
func (s *buildState) noteAliases(ing *networkingv1.Ingress, policy *Policy) {
	if policy.Nginx.FromToWWWRedirect {
		for _, rule := range ing.Spec.Rules {
			h := strings.ToLower(rule.Host)
			if h == "" || strings.HasPrefix(h, "*.") {
				continue
			}
			twin, ok := strings.CutPrefix(h, "www.")
			if !ok {
				twin = "www." + h
			}
			s.aliases = append(s.aliases, aliasRequest{ing: ing, host: h, aliases: []string{twin}, quiet: true})
		}
	}
	if len(policy.Nginx.ServerAliases) == 0 {
		return
	}
	for _, rule := range ing.Spec.Rules {
		if rule.Host != "" {
			s.aliases = append(s.aliases, aliasRequest{ing: ing, host: strings.ToLower(rule.Host), aliases: policy.Nginx.ServerAliases})
			return
		}
	}
	s.problem(ing, "InvalidAnnotation", "%sserver-alias: the Ingress has no rule with a host to alias; ignored", annotations.NginxPrefix)
}

// addAliases serves each server-alias exactly as the first rule host of its Ingress (nginx's
// server_name). A name some Ingress already uses as a rule host keeps its own rules.
func (s *buildState) addAliases() {
	for _, a := range s.aliases {
		hr := s.lookupHost(a.host)
		if hr == nil {
			continue
		}
		for _, alias := range a.aliases {
			m, k := s.t.exact, alias
			if rest, ok := strings.CutPrefix(alias, "*."); ok {
				m, k = s.t.wildcard, rest
			}
			if old := m[k]; old != nil && old != hr {
				if a.quiet {
					continue
				}
				s.problem(a.ing, "ServerAliasConflict", "server-alias %q is ignored: it is already a rule host or alias of another Ingress", alias)
				continue
			}
			m[k] = hr
		}
	}
}
