// Package route turns the served Ingresses of a cluster snapshot into an immutable route table and
// matches requests against it exactly as the Ingress v1 spec says (hosts, then paths, then defaultBackend).
package route

import (
	"crypto/tls"
	"net/netip"
	"regexp"
	"strings"

	"k8s.io/apimachinery/pkg/types"
)

// Path types as the matcher knows them. ImplementationSpecific paths are matched as Prefix paths:
// baregate has no other meaning to give them, and Prefix is what users of the other path types expect.
const (
	Exact  = "Exact"
	Prefix = "Prefix"
)

// Table is a complete, immutable route table. The proxy holds one behind an atomic pointer and swaps
// in a new one after each sync, so requests in flight keep the table they started with.
type Table struct {
	// Routes lists every route, host by host; Route.ID indexes it.
	Routes []*Route
	// Backends lists the distinct Service ports routes point to; Backend.ID indexes it.
	Backends []*Backend
	// Default serves requests no rule matches (the oldest Ingress's spec.defaultBackend); nil for 404.
	Default *Route
	// Certs picks the TLS certificate for a server name.
	Certs *Certs

	exact    map[string]*hostRoutes // by lower-case host
	wildcard map[string]*hostRoutes // "*.foo.com" keyed by "foo.com"
	anyHost  *hostRoutes            // rules without a host
}

// Route is one host/path rule of one Ingress.
type Route struct {
	ID       int
	Host     string // as written, lower-cased; "" for any host; "*.foo.com" for a wildcard
	Path     string // as written; "" only for the default backend
	PathType string // as written in the Ingress (Exact, Prefix or ImplementationSpecific)
	Ingress  types.NamespacedName
	Backend  *Backend
	Policy   *Policy
	// TLS is set when a certificate from the Ingresses covers Host or a spec.tls lists it (then
	// served with the default or an ACME certificate); plain HTTP to it is redirected (ssl-redirect).
	TLS bool
	// Regex is set when Path is a regular expression (use-regex or rewrite-target).
	Regex bool
	// Canary is the route of a canary Ingress for the same host and path, or nil. The proxy sends a
	// request there when the canary's annotations say so; Match never returns it.
	Canary *Route

	re *regexp.Regexp // set for paths of hosts matched by regular expressions
}

// Backend is one Service port behind one or more routes, with the endpoints to send requests to.
type Backend struct {
	ID      int
	Service types.NamespacedName
	// Port is the Service port as the Ingress names it: a name, or a number in decimal.
	Port string
	// H2C is set when the Service port's appProtocol asks for HTTP/2 without TLS (kubernetes.io/h2c, grpc).
	H2C bool
	// Endpoints are the addresses to balance over, already narrowed to the best set available (ready
	// endpoints on live nodes if any; see pickEndpoints). Empty means 503.
	Endpoints []netip.AddrPort
	// Ready is how many ready endpoints the Service port has, on any node.
	Ready int
}

// BackendKey identifies a backend across tables, so that balancing state survives endpoint changes.
type BackendKey struct {
	Service types.NamespacedName
	Port    string
}

// Key returns the backend's identity across tables.
func (b *Backend) Key() BackendKey { return BackendKey{b.Service, b.Port} }

// RouteKey identifies a route across tables, for counters that must survive table swaps.
type RouteKey struct {
	Host, PathType, Path string
	Ingress              types.NamespacedName
}

// Key returns the route's identity across tables.
func (r *Route) Key() RouteKey { return RouteKey{r.Host, r.PathType, r.Path, r.Ingress} }

type hostRoutes struct {
	exact  map[string]*Route
	prefix map[string]*Route // by path without trailing slashes ("/" stays "/")
	// ordered is set when a path of the host is a regular expression: then every non-Exact path is
	// matched as one, in this order (see orderRegexHosts).
	ordered  []*Route
	hasRegex bool
}

// Match returns the route for a request's Host header (a port is ignored) and URL path, or nil when
// no rule matches and there is no default backend (404). Rules of the exact host are tried first,
// then those of the wildcard host covering it, then host-less rules, then the default backend; a
// host whose rules have no path matching falls through to the next, as a host-less catch-all would
// otherwise never be reachable for hosts with a few specific paths.
func (t *Table) Match(host, path string) *Route {
	host = NormalizeHost(host)
	if path == "" || path[0] != '/' {
		path = "/"
	}
	if hr := t.exact[host]; hr != nil {
		if r := hr.match(path); r != nil {
			return r
		}
	}
	if i := strings.IndexByte(host, '.'); i > 0 {
		if hr := t.wildcard[host[i+1:]]; hr != nil {
			if r := hr.match(path); r != nil {
				return r
			}
		}
	}
	if t.anyHost != nil {
		if r := t.anyHost.match(path); r != nil {
			return r
		}
	}
	return t.Default
}

// match finds the longest matching path. An Exact path can only match the whole request path, which
// is at least as long as any Prefix match, so on a tie Exact wins by being looked up first.
func (h *hostRoutes) match(path string) *Route {
	if r := h.exact[path]; r != nil {
		return r
	}
	if h.ordered != nil {
		for _, r := range h.ordered {
			if r.re != nil && r.re.MatchString(path) {
				return r
			}
		}
		return nil
	}
	if len(h.prefix) == 0 {
		return nil
	}
	cur := strings.TrimRight(path, "/")
	for {
		if cur == "" {
			return h.prefix["/"]
		}
		if r := h.prefix[cur]; r != nil {
			return r
		}
		i := strings.LastIndexByte(cur, '/')
		if i < 0 {
			return h.prefix["/"]
		}
		cur = cur[:i]
	}
}

// NormalizeHost lower-cases a Host header or SNI name and strips a port, IPv6 brackets and a final dot.
func NormalizeHost(host string) string {
	if host == "" {
		return ""
	}
	if host[0] == '[' {
		if i := strings.IndexByte(host, ']'); i > 0 {
			host = host[1:i]
		}
	} else if i := strings.LastIndexByte(host, ':'); i >= 0 && strings.IndexByte(host, ':') == i {
		host = host[:i]
	}
	host = strings.TrimSuffix(host, ".")
	for i := 0; i < len(host); i++ {
		if c := host[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(host)
		}
	}
	return host
}

// Certs maps server names to certificates: exact names first, then one-label wildcards.
type Certs struct {
	exact    map[string]*tls.Certificate
	wildcard map[string]*tls.Certificate // "*.foo.com" keyed by "foo.com"
}

// Lookup returns the certificate for a TLS server name, or nil (the caller then uses its default).
func (c *Certs) Lookup(serverName string) *tls.Certificate {
	if c == nil {
		return nil
	}
	name := NormalizeHost(serverName)
	if cert := c.exact[name]; cert != nil {
		return cert
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		return c.wildcard[name[i+1:]]
	}
	return nil
}

// Len is the number of names with a certificate.
func (c *Certs) Len() int {
	if c == nil {
		return 0
	}
	return len(c.exact) + len(c.wildcard)
}
