// Package annotations reads the ingress-nginx annotations (and baregate.io equivalents) of an Ingress
// into a typed Policy, validated strictly, plus the pure per-request decisions the proxy makes with it.
package annotations

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
)

const (
	// NginxPrefix is the prefix of the ingress-nginx annotations users already have.
	NginxPrefix = "nginx.ingress.kubernetes.io/"
	// BaregatePrefix spells the same options as baregate's own; it wins over NginxPrefix, so a user can
	// move an Ingress over without ingress-nginx reading the new value.
	BaregatePrefix = "baregate.io/"
)

// Problem is one annotation that cannot be honoured as written. The caller turns it into a Warning
// Event on the Ingress; the option it names has already fallen back to its documented safe behaviour.
type Problem struct {
	Annotation string // full key, e.g. nginx.ingress.kubernetes.io/proxy-body-size
	Reason     string // CamelCase, as Event reasons are
	Message    string
}

func (p Problem) String() string { return p.Reason + ": " + p.Annotation + ": " + p.Message }

// SecretGetter returns a Secret the Ingress refers to, or nil when it does not exist (or is not
// visible to the gateway). A func keeps Parse pure: the caller hands in a lookup on its snapshot.
type SecretGetter func(key types.NamespacedName) *corev1.Secret

// Parse is Defaults.Parse with ingress-nginx's stock defaults.
func Parse(ing *networkingv1.Ingress, secrets SecretGetter) (*Policy, []Problem) {
	return DefaultDefaults().Parse(ing, secrets)
}

// Parse turns the annotations of ing into a Policy. It never fails: each bad value is a Problem and
// its option keeps the safe behaviour documented on the Policy field. Problems come sorted by key, each once.
func (d Defaults) Parse(ing *networkingv1.Ingress, secrets SecretGetter) (*Policy, []Problem) {
	ps := &parser{ing: ing, secrets: secrets}
	p := &Policy{HSTS: d.HSTS}
	for _, f := range parsers {
		f(ps, p, d)
	}
	ps.reportUnknown()
	// An option read twice (say, to pick which annotation a later Problem names) must not warn twice.
	slices.SortFunc(ps.problems, func(a, b Problem) int {
		return cmp.Or(strings.Compare(a.Annotation, b.Annotation), strings.Compare(a.Reason, b.Reason), strings.Compare(a.Message, b.Message))
	})
	return p, slices.Compact(ps.problems)
}

// parsers fill one group of Policy fields each; their order only matters for reading.
var parsers = []func(*parser, *Policy, Defaults){
	parseRewrite, parseRedirects, parseBackend, parseSourceRanges, parseCORS, parseAffinity, parseCanary,
	parseForwardAuth, parseBasicAuth, parseRateLimit, parseErrors, parseServerAlias,
}

type parser struct {
	ing      *networkingv1.Ingress
	secrets  SecretGetter
	problems []Problem
}

// get returns the value of an option by name (without prefix), preferring baregate.io/ over the
// ingress-nginx spelling. Values are trimmed, as kubectl and Helm often leave a newline behind.
func (ps *parser) get(name string) (string, bool) {
	bv, bok := ps.ing.Annotations[BaregatePrefix+name]
	nv, nok := ps.ing.Annotations[NginxPrefix+name]
	switch {
	case bok && nok && strings.TrimSpace(bv) != strings.TrimSpace(nv):
		ps.problem(name, "ConflictingAnnotation", "both %s and %s are set; using the baregate.io value %q", BaregatePrefix+name, NginxPrefix+name, bv)
		return strings.TrimSpace(bv), true
	case bok:
		return strings.TrimSpace(bv), true
	case nok:
		return strings.TrimSpace(nv), true
	}
	return "", false
}

// key is the annotation key a Problem about option name points at: the one the user actually set.
func (ps *parser) key(name string) string {
	if _, ok := ps.ing.Annotations[BaregatePrefix+name]; ok {
		return BaregatePrefix + name
	}
	return NginxPrefix + name
}

func (ps *parser) problem(name, reason, format string, args ...any) {
	ps.problems = append(ps.problems, Problem{Annotation: ps.key(name), Reason: reason, Message: fmt.Sprintf(format, args...)})
}

// invalid reports a bad value and what the option does instead.
func (ps *parser) invalid(name string, err error, fallback string) {
	ps.problem(name, "InvalidAnnotation", "%v; %s", err, fallback)
}

// reportUnknown flags every ingress-nginx annotation baregate does not implement, so that nobody
// believes a setting is in force when it is not. Snippets get their own reason: they are refused on
// purpose, not missing.
func (ps *parser) reportUnknown() {
	for k := range ps.ing.Annotations {
		name, ok := strings.CutPrefix(k, NginxPrefix)
		if !ok {
			continue
		}
		if _, ok := supported[name]; ok {
			continue
		}
		if instead, ok := snippets[name]; ok {
			ps.problems = append(ps.problems, Problem{Annotation: k, Reason: "SnippetIgnored",
				Message: "nginx configuration snippets are never executed by baregate; " + instead})
			continue
		}
		ps.problems = append(ps.problems, Problem{Annotation: k, Reason: "UnsupportedAnnotation",
			Message: "baregate does not implement this ingress-nginx annotation; it has no effect (see docs/ingress-nginx-annotations.md)"})
	}
}

// snippets are the ingress-nginx annotations that inject raw nginx configuration, with what to use
// instead.
var snippets = map[string]string{
	"configuration-snippet": "use the dedicated annotations instead (rewrite-target, enable-cors, auth-url, permanent-redirect, limit-rps) or set headers in the backend",
	"server-snippet":        "use server-alias, ssl-redirect, permanent-redirect, app-root or a separate Ingress instead",
	"auth-snippet":          "use auth-url, auth-method and auth-response-headers instead",
	"stream-snippet":        "use a LoadBalancer Service for TCP/UDP instead",
	"modsecurity-snippet":   "put a web application firewall in front of or inside the backend instead",
}
