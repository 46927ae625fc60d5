package route

import (
	"maps"
	"slices"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/baregate/baregate/ingress/annotations"
	"github.com/baregate/baregate/internal/cluster"
)

// The incremental path of Builder.Build: route propagation must not cost a rebuild of every route
// when one Ingress is created. Under the snapshot contract (unchanged objects keep their pointers),
// a snapshot whose served Ingresses are the previous ones plus newer ones at the end, with the same
// Secrets and live nodes and no change to a Service the table looked up, gives the previous table
// plus the new Ingresses' routes, provided those Ingresses touch nothing the others built: new
// hosts only, no options, TLS, default backend or canary. Anything else takes the full build; the
// result is the same either way (TestIncrementalMatchesFullBuild).

// lastBuild is what the previous Build made and what it depended on.
type lastBuild struct {
	snap        *cluster.Snapshot
	defaults    *annotations.Defaults
	table       *Table
	problems    []Problem
	plainPolicy *Policy
	// backends and refs describe table; the incremental path extends them in place, as the table
	// it derives from is never derived from again.
	backends map[BackendKey]*Backend
	refs     map[types.NamespacedName]bool
	tlsHosts map[string]bool
}

func (b *Builder) remember(s *buildState, problems []Problem) {
	b.last = &lastBuild{snap: s.snap, defaults: b.Defaults, table: s.t, problems: problems, plainPolicy: s.plainPolicy,
		backends: s.backends, refs: s.refs, tlsHosts: s.tlsHosts}
}

// incremental returns the table for next derived from the previous build, when it can be.
func (b *Builder) incremental(next *cluster.Snapshot) (*Table, []Problem, bool) {
	l := b.last
	if l == nil || l.defaults != b.Defaults || !cluster.SameMap(l.snap.Secrets, next.Secrets) ||
		!cluster.SameMap(l.snap.LiveNodes, next.LiveNodes) {
		return nil, nil, false
	}
	for _, key := range next.ServicesChanged(l.snap) {
		if l.refs[key] {
			return nil, nil, false
		}
	}
	old, cur := l.snap.Ingresses, next.Ingresses
	if len(cur) < len(old) || !cluster.SameSlice(old, cur[:len(old)]) && !samePointers(old, cur[:len(old)]) {
		return nil, nil, false
	}
	added := cur[len(old):]
	if len(added) == 0 {
		l.snap = next
		return l.table, l.problems, true
	}
	if l.plainPolicy == nil || !simplePolicy(l.plainPolicy) {
		return nil, nil, false
	}
	for _, ing := range added {
		if !b.appendable(ing) {
			return nil, nil, false
		}
	}
	prev := l.table
	t := &Table{Routes: slices.Clip(prev.Routes), Backends: slices.Clip(prev.Backends), Default: prev.Default, Certs: prev.Certs,
		exact: maps.Clone(prev.exact), wildcard: prev.wildcard, anyHost: prev.anyHost}
	for _, ing := range added {
		if hasWildcardRule(ing) {
			t.wildcard = maps.Clone(prev.wildcard)
			break
		}
	}
	s := &buildState{snap: next, b: b, t: t, backends: l.backends, refs: l.refs, tlsHosts: l.tlsHosts, plainPolicy: l.plainPolicy}
	first := len(t.Routes)
	for _, ing := range added {
		s.addIngress(ing, s.policy(ing))
	}
	for _, r := range t.Routes[first:] {
		r.TLS = r.Host != "" && (t.Certs.Lookup(r.Host) != nil || s.tlsHosts[r.Host])
	}
	problems := l.problems
	if len(s.problems) > 0 {
		problems = dedupProblems(append(slices.Clip(l.problems), s.problems...))
	}
	l.snap, l.table, l.problems = next, t, problems
	return t, problems, true
}

// samePointers reports whether a and b hold the same Ingresses in the same order.
func samePointers(a, b []*networkingv1.Ingress) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// simplePolicy reports whether the shared policy of option-less Ingresses adds nothing beyond
// their own rules to the table (no aliases, no canary, no regular expressions).
func simplePolicy(p *Policy) bool {
	n := p.Nginx
	return !n.FromToWWWRedirect && len(n.ServerAliases) == 0 && n.Canary == nil && !n.UseRegex
}

// appendable reports whether ing, newer than every Ingress of the previous build, only adds rules
// for hosts that the previous table does not have.
func (b *Builder) appendable(ing *networkingv1.Ingress) bool {
	if hasOptions(ing) || ing.Spec.DefaultBackend != nil || len(ing.Spec.TLS) > 0 {
		return false
	}
	prev := b.last.table
	for _, rule := range ing.Spec.Rules {
		host := strings.ToLower(rule.Host)
		switch {
		case host == "":
			return false
		case strings.HasPrefix(host, "*."):
			if prev.wildcard[host[2:]] != nil {
				return false
			}
		default:
			if prev.exact[host] != nil {
				return false
			}
		}
	}
	return true
}

func hasWildcardRule(ing *networkingv1.Ingress) bool {
	for _, rule := range ing.Spec.Rules {
		if strings.HasPrefix(rule.Host, "*.") {
			return true
		}
	}
	return false
}
