package route

import (
	"cmp"
	"crypto/tls"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/baregate/baregate/ingress/annotations"
	"github.com/baregate/baregate/internal/cluster"
)

// Problem is bad input found in one Ingress. It affects only that Ingress's routes; the apply layer
// turns it into a Warning Event on the Ingress.
type Problem struct {
	Ingress *networkingv1.Ingress
	Reason  string // CamelCase, as Event reasons are
	Message string
}

func (p Problem) String() string {
	return fmt.Sprintf("%s/%s: %s: %s", p.Ingress.Namespace, p.Ingress.Name, p.Reason, p.Message)
}

// Builder builds route tables, remembering parsed certificates between builds so that a sync after an
// unrelated change does not parse every key again. The zero value is ready to use; a Builder is not
// safe for concurrent use.
type Builder struct {
	// Defaults are the ingress-nginx ConfigMap-level settings (HSTS); nil means ingress-nginx's.
	Defaults *annotations.Defaults
	certs    map[types.NamespacedName]parsedCert
	last     *lastBuild // what the previous Build made, for the incremental path
}

type parsedCert struct {
	uid  types.UID
	rv   string
	cert *tls.Certificate
	err  error
}

// Build is Builder.Build without a certificate cache.
func Build(snap *cluster.Snapshot) (*Table, []Problem) {
	var b Builder
	return b.Build(snap)
}

// Build turns the Ingresses of snap (already narrowed to the ones baregate serves, oldest first) into
// a route table. Conflicts go to the oldest Ingress; every rule that cannot be served becomes a Problem
// on its own Ingress and leaves all other routes alone.
func (b *Builder) Build(snap *cluster.Snapshot) (*Table, []Problem) {
	if t, problems, ok := b.incremental(snap); ok {
		return t, problems
	}
	b.last = nil
	s := &buildState{
		snap:      snap,
		b:         b,
		t:         &Table{exact: map[string]*hostRoutes{}, wildcard: map[string]*hostRoutes{}, Certs: &Certs{exact: map[string]*tls.Certificate{}, wildcard: map[string]*tls.Certificate{}}},
		backends:  map[BackendKey]*Backend{},
		certOwner: map[string]types.NamespacedName{},
		usedCerts: map[types.NamespacedName]bool{},
		tlsHosts:  map[string]bool{},
		refs:      map[types.NamespacedName]bool{},
	}
	// Canaries attach to the routes of their main Ingress, so they go last whatever their age.
	type canary struct {
		ing *networkingv1.Ingress
		pol *Policy
	}
	var canaries []canary
	for _, ing := range snap.Ingresses {
		pol := s.policy(ing)
		if pol.Nginx.Canary != nil {
			canaries = append(canaries, canary{ing, pol})
			continue
		}
		s.addIngress(ing, pol)
	}
	for _, c := range canaries {
		s.addCanary(c.ing, c.pol)
	}
	s.addAliases()
	s.orderRegexHosts()
	for _, r := range s.t.Routes {
		r.TLS = r.Host != "" && (s.t.Certs.Lookup(r.Host) != nil || s.tlsHosts[r.Host])
	}
	for key := range b.certs {
		if !s.usedCerts[key] {
			delete(b.certs, key)
		}
	}
	problems := dedupProblems(s.problems)
	b.remember(s, problems)
	return s.t, problems
}

type buildState struct {
	snap      *cluster.Snapshot
	b         *Builder
	t         *Table
	backends  map[BackendKey]*Backend
	certOwner map[string]types.NamespacedName // certificate name -> Secret serving it
	usedCerts map[types.NamespacedName]bool
	problems  []Problem
	aliases   []aliasRequest
	// tlsHosts are the hosts some spec.tls lists, with or without a usable Secret: ingress-nginx
	// serves them over HTTPS (with the default or an ACME certificate) and redirects plain HTTP.
	tlsHosts map[string]bool
	// plainPolicy is the parse of the defaults, shared by Ingresses without options.
	plainPolicy *Policy
	// refs are the Services the build looked up, found or not: a change to any other Service
	// cannot change the table.
	refs map[types.NamespacedName]bool
}

// service looks up a Service of the snapshot, noting that the table depends on it.
func (s *buildState) service(key types.NamespacedName) *cluster.Service {
	s.refs[key] = true
	return s.snap.Service(key)
}

func (s *buildState) problem(ing *networkingv1.Ingress, reason, format string, args ...any) {
	s.problems = append(s.problems, Problem{Ingress: ing, Reason: reason, Message: fmt.Sprintf(format, args...)})
}

func (s *buildState) addIngress(ing *networkingv1.Ingress, policy *Policy) {
	key := types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}
	s.noteAliases(ing, policy)
	if db := ing.Spec.DefaultBackend; db != nil {
		if s.t.Default == nil {
			s.addRoute(&Route{Ingress: key, Policy: policy, Backend: s.backend(ing, *db)})
		} else {
			s.problem(ing, "DefaultBackendConflict", "spec.defaultBackend is ignored: Ingress %s, which is older, already sets the default backend", s.t.Default.Ingress)
		}
	}
	for _, rule := range ing.Spec.Rules {
		host := strings.ToLower(rule.Host)
		if host != "" {
			if err := checkHost(host); err != nil {
				s.problem(ing, "InvalidHost", "rule ignored: %v", err)
				continue
			}
		}
		if rule.HTTP == nil {
			continue
		}
		hr := s.hostRoutes(host)
		for _, p := range rule.HTTP.Paths {
			kind := matchKind(p.PathType)
			regex := policy.Nginx.UseRegex && kind == Prefix
			if err := checkPath(p.Path, p.PathType, regex); err != nil {
				s.problem(ing, "InvalidPath", "path ignored: %v", err)
				continue
			}
			byPath := hr.paths(kind)
			pk := pathKey(kind, p.Path)
			if regex {
				pk, hr.hasRegex = regexKey(p.Path), true
			}
			if old := byPath[pk]; old != nil {
				if old.Ingress != key {
					s.problem(ing, "RouteConflict", "%s path %q of host %q is ignored: Ingress %s, which is older, already routes it", kind, p.Path, displayHost(host), old.Ingress)
				} else if be := s.backend(ing, p.Backend); be != old.Backend {
					s.problem(ing, "RouteConflict", "%s path %q of host %q is listed twice with different backends; the first is used", kind, p.Path, displayHost(host))
				}
				continue
			}
			r := &Route{Host: host, Path: p.Path, PathType: pathTypeName(p.PathType), Regex: regex, Ingress: key, Policy: policy, Backend: s.backend(ing, p.Backend)}
			byPath[pk] = r
			s.addRoute(r)
		}
	}
	for _, t := range ing.Spec.TLS {
		s.addTLS(ing, t)
	}
}

func displayHost(h string) string {
	if h == "" {
		return "*"
	}
	return h
}

func (s *buildState) addRoute(r *Route) {
	r.ID = len(s.t.Routes)
	s.t.Routes = append(s.t.Routes, r)
	if r.Path == "" {
		s.t.Default = r
	}
}

func (s *buildState) hostRoutes(host string) *hostRoutes {
	var m map[string]*hostRoutes
	var k string
	switch {
	case host == "":
		if s.t.anyHost == nil {
			s.t.anyHost = newHostRoutes()
		}
		return s.t.anyHost
	case strings.HasPrefix(host, "*."):
		m, k = s.t.wildcard, host[2:]
	default:
		m, k = s.t.exact, host
	}
	hr := m[k]
	if hr == nil {
		hr = newHostRoutes()
		m[k] = hr
	}
	return hr
}

func newHostRoutes() *hostRoutes { return &hostRoutes{} }

// paths returns the map of one kind of path, made on first use: most hosts have one or two paths.
func (h *hostRoutes) paths(kind string) map[string]*Route {
	m := &h.prefix
	if kind == Exact {
		m = &h.exact
	}
	if *m == nil {
		*m = make(map[string]*Route, 8) // one small group, allocated at once
	}
	return *m
}

// backend resolves an Ingress backend to the shared Backend of its Service port. It never returns nil:
// a backend that cannot be resolved has no endpoints, so its routes answer 503 while the Problem says why.
func (s *buildState) backend(ing *networkingv1.Ingress, ib networkingv1.IngressBackend) *Backend {
	if ib.Service == nil {
		what := "none"
		if ib.Resource != nil {
			what = ib.Resource.Kind + " " + ib.Resource.Name
		}
		s.problem(ing, "UnsupportedBackend", "backend %s is not a Service; its routes answer 503", what)
		return s.sharedBackend(&Backend{Service: types.NamespacedName{Namespace: ing.Namespace}, Port: "resource:" + what})
	}
	be := &Backend{Service: types.NamespacedName{Namespace: ing.Namespace, Name: ib.Service.Name}, Port: ib.Service.Port.Name}
	if ib.Service.Port.Name == "" {
		be.Port = strconv.Itoa(int(ib.Service.Port.Number))
	}
	if shared := s.backends[be.Key()]; shared != nil {
		if len(shared.Endpoints) == 0 {
			s.explainEmpty(ing, shared)
		}
		return shared
	}
	s.resolve(ing, be, ib.Service.Port)
	return s.sharedBackend(be)
}

func (s *buildState) sharedBackend(be *Backend) *Backend {
	k := be.Key()
	if shared := s.backends[k]; shared != nil {
		return shared
	}
	be.ID = len(s.t.Backends)
	s.t.Backends = append(s.t.Backends, be)
	s.backends[k] = be
	return be
}

// explainEmpty repeats, for another Ingress using the same backend, why the backend cannot serve.
func (s *buildState) explainEmpty(ing *networkingv1.Ingress, be *Backend) {
	probe := &Backend{Service: be.Service, Port: be.Port}
	port := networkingv1.ServiceBackendPort{Name: be.Port}
	if n, err := strconv.Atoi(be.Port); err == nil {
		port = networkingv1.ServiceBackendPort{Number: int32(n)}
	}
	s.resolve(ing, probe, port)
}

func (s *buildState) resolve(ing *networkingv1.Ingress, be *Backend, port networkingv1.ServiceBackendPort) {
	svc := s.service(be.Service)
	if svc == nil {
		s.problem(ing, "ServiceNotFound", "Service %s does not exist; its routes answer 503", be.Service)
		return
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		s.problem(ing, "UnsupportedBackend", "Service %s is of type ExternalName, which has no endpoints to proxy to; its routes answer 503", be.Service)
		return
	}
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		p := &svc.Spec.Ports[i]
		if port.Name != "" && p.Name == port.Name || port.Name == "" && p.Port == port.Number {
			sp = p
			break
		}
	}
	if sp == nil {
		s.problem(ing, "ServicePortNotFound", "Service %s has no port %s; its routes answer 503", be.Service, be.Port)
		return
	}
	if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
		s.problem(ing, "UnsupportedBackend", "port %s of Service %s is %s, not TCP; its routes answer 503", be.Port, be.Service, sp.Protocol)
		return
	}
	if ap := sp.AppProtocol; ap != nil {
		switch strings.ToLower(*ap) {
		case "kubernetes.io/h2c", "grpc", "h2c":
			be.H2C = true
		}
	}
	be.Endpoints, be.Ready = pickEndpoints(s.snap, svc.Endpoints, sp.Name)
}

// pickEndpoints returns the endpoint addresses for a Service port, best set first: ready endpoints on
// nodes the gossip sees live; else ready ones anywhere (the gossip may be wrong, the endpoint may still
// answer); else serving-but-terminating ones (draining pods still answer, which beats a 503), live
// nodes first. It also returns the number of ready endpoints.
func pickEndpoints(snap *cluster.Snapshot, eps []cluster.Endpoint, portName string) ([]netip.AddrPort, int) {
	var tiers [4][]netip.AddrPort
	for i := range eps {
		e := &eps[i]
		port, ok := e.Port(portName, corev1.ProtocolTCP)
		if !ok || port <= 0 || port > 65535 {
			continue
		}
		tier := 0
		switch {
		case e.Ready:
		case e.Serving && e.Terminating:
			tier = 2
		default:
			continue
		}
		if !snap.NodeLive(e.NodeName) {
			tier++
		}
		tiers[tier] = append(tiers[tier], netip.AddrPortFrom(e.Addr, uint16(port)))
	}
	ready := len(tiers[0]) + len(tiers[1])
	for _, t := range tiers {
		if len(t) > 0 {
			return t, ready
		}
	}
	return nil, ready
}

func (s *buildState) addTLS(ing *networkingv1.Ingress, t networkingv1.IngressTLS) {
	for _, h := range t.Hosts {
		s.tlsHosts[strings.ToLower(h)] = true
	}
	if t.SecretName == "" {
		return // the hosts get the default certificate, as with other controllers
	}
	key := types.NamespacedName{Namespace: ing.Namespace, Name: t.SecretName}
	sec := s.snap.Secrets[key]
	if sec == nil {
		s.problem(ing, "SecretNotFound", "TLS Secret %s does not exist; its hosts get the default certificate", key)
		return
	}
	cert, err := s.b.parse(sec)
	s.usedCerts[key] = true
	if err != nil {
		s.problem(ing, "InvalidCertificate", "TLS Secret %s: %v; its hosts get the default certificate", key, err)
		return
	}
	hosts := t.Hosts
	if len(hosts) == 0 && cert.Leaf != nil {
		hosts = cert.Leaf.DNSNames
	}
	for _, h := range hosts {
		h = strings.ToLower(h)
		if err := checkHost(h); err != nil {
			s.problem(ing, "InvalidHost", "TLS host ignored: %v", err)
			continue
		}
		if owner, taken := s.certOwner[h]; taken {
			if owner != key {
				s.problem(ing, "CertificateConflict", "TLS host %q already has the certificate of Secret %s from an older Ingress; %s is not used for it", h, owner, key)
			}
			continue
		}
		s.certOwner[h] = key
		if strings.HasPrefix(h, "*.") {
			s.t.Certs.wildcard[h[2:]] = cert
		} else {
			s.t.Certs.exact[h] = cert
		}
	}
}

// parse returns the certificate of a TLS Secret, parsing it only when the Secret changed.
func (b *Builder) parse(sec *corev1.Secret) (*tls.Certificate, error) {
	key := types.NamespacedName{Namespace: sec.Namespace, Name: sec.Name}
	if c, ok := b.certs[key]; ok && c.uid == sec.UID && c.rv == sec.ResourceVersion && sec.ResourceVersion != "" {
		return c.cert, c.err
	}
	c := parsedCert{uid: sec.UID, rv: sec.ResourceVersion}
	c.cert, c.err = parseTLSSecret(sec)
	if b.certs == nil {
		b.certs = map[types.NamespacedName]parsedCert{}
	}
	b.certs[key] = c
	return c.cert, c.err
}

func parseTLSSecret(sec *corev1.Secret) (*tls.Certificate, error) {
	crt, key := sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey]
	if len(crt) == 0 || len(key) == 0 {
		return nil, fmt.Errorf("secret of type %q has no %s and %s", sec.Type, corev1.TLSCertKey, corev1.TLSPrivateKeyKey)
	}
	cert, err := tls.X509KeyPair(crt, key)
	if err != nil {
		return nil, fmt.Errorf("parsing the certificate and key: %w", err)
	}
	return &cert, nil
}

func dedupProblems(in []Problem) []Problem {
	type key struct {
		ing             *networkingv1.Ingress
		reason, message string
	}
	seen := map[key]bool{}
	out := in[:0]
	for _, p := range in {
		k := key{p.Ingress, p.Reason, p.Message}
		if !seen[k] {
			seen[k] = true
			out = append(out, p)
		}
	}
	slices.SortStableFunc(out, func(a, b Problem) int {
		return cmp.Or(strings.Compare(a.Ingress.Namespace, b.Ingress.Namespace), strings.Compare(a.Ingress.Name, b.Ingress.Name))
	})
	return out
}
