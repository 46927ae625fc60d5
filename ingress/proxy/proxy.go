// Package proxy is the ingress's reverse proxy: it matches each request against the current route
// table and forwards it straight to a backend endpoint, balancing, retrying and timing out like nginx.
package proxy

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"

	"github.com/baregate/baregate/ingress/route"
	"github.com/baregate/baregate/internal/cluster"
)

// Options tune the proxy. New fills zero values with the defaults in brackets.
type Options struct {
	Balance        string        // RoundRobin [default] or LeastInFlight
	ConnectTimeout time.Duration // [5s]
	ReadTimeout    time.Duration // longest wait for each read from a backend [60s]
	SendTimeout    time.Duration // longest wait for each write to a backend [60s]
	// ClientSendTimeout is the longest wait for each write to a client, as nginx's send_timeout
	// [60s]: a client that stops reading a response is disconnected (over HTTP/2, its stream is
	// reset), and the backend connection it held is freed.
	ClientSendTimeout       time.Duration
	PassiveHealthTimeout    time.Duration // how long an endpoint that refused a connection is skipped [10s]
	Retries                 int           // further endpoints tried after a connection failure [2]
	MaxIdleConnsPerEndpoint int           // keep-alive connections kept per endpoint [1024]
	ServerHeader            string        // Server header on every response [baregate]
	// TrustForwardedHeaders keeps the X-Forwarded-* headers clients send (behind another proxy that
	// sets them) instead of replacing them.
	TrustForwardedHeaders bool
	// DisableFastPath sends every request through net/http's Transport instead of the in-goroutine
	// HTTP/1.1 path (see fastpath.go).
	DisableFastPath bool
	// MaxConnsPerBackend bounds the upstream connections in use at once per backend (Service port),
	// over all its endpoints; requests beyond it wait up to the connect timeout, then get 503.
	// 0 is no bound.
	MaxConnsPerBackend int
	// AccessLog logs every request at info level.
	AccessLog bool
	Logger    klog.Logger
}

func (o *Options) defaults() {
	if o.Balance == "" {
		o.Balance = RoundRobin
	}
	set := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	set(&o.ConnectTimeout, 5*time.Second)
	set(&o.ReadTimeout, 60*time.Second)
	set(&o.SendTimeout, 60*time.Second)
	set(&o.ClientSendTimeout, 60*time.Second)
	set(&o.PassiveHealthTimeout, 10*time.Second)
	if o.Retries == 0 {
		o.Retries = 2
	}
	if o.MaxIdleConnsPerEndpoint == 0 {
		o.MaxIdleConnsPerEndpoint = 1024
	}
	if o.ServerHeader == "" {
		o.ServerHeader = "baregate"
	}
}

// Proxy forwards requests by the route table last given to Swap.
type Proxy struct {
	opts      Options
	serverHdr []string
	state     atomic.Pointer[state]
	http1     *http.Transport
	h2c       *http.Transport
	dialer    *net.Dialer
	metrics   *metrics
	timeouts  timeouts // the defaults from Options
	// transports are those of backend-protocol and per-route timeouts, by transportKey.
	transports sync.Map
	// authTransport sends auth-url subrequests to services outside the cluster, verifying TLS.
	authTransport *http.Transport
	// basicOK remembers accepted basic-auth credentials (basicKey -> expiry); cleared on Swap.
	basicOK sync.Map

	limitMu  sync.Mutex
	limiters map[limiterKey]*limiter

	// mu guards the registries below, which Swap updates and scrapes read.
	mu           sync.Mutex
	endpoints    map[netip.AddrPort]*endpoint
	rotations    map[route.BackendKey]*atomic.Uint64 // round-robin counters
	connCaps     map[route.BackendKey]*connCap
	routeStats   map[route.RouteKey]*routeStats
	backendStats map[route.BackendKey]*backendStats
}

// state is what one request needs, published atomically: a table and the live objects its routes
// and backends index.
type state struct {
	table    *route.Table
	pools    []*pool         // by Backend.ID
	backends []*backendStats // by Backend.ID
	routes   []*routeStats   // by Route.ID
}

// New returns a Proxy that answers 503 until the first Swap. Its metrics are registered on reg (nil
// for none).
func New(opts Options, reg prometheus.Registerer) (*Proxy, error) {
	opts.defaults()
	if opts.Balance != RoundRobin && opts.Balance != LeastInFlight {
		return nil, fmt.Errorf("unknown balancing algorithm %q (want %s or %s)", opts.Balance, RoundRobin, LeastInFlight)
	}
	p := &Proxy{
		opts:         opts,
		serverHdr:    []string{opts.ServerHeader},
		http1:        newTransport(opts, false),
		h2c:          newTransport(opts, true),
		dialer:       &net.Dialer{Timeout: opts.ConnectTimeout, KeepAlive: 30 * time.Second},
		endpoints:    map[netip.AddrPort]*endpoint{},
		rotations:    map[route.BackendKey]*atomic.Uint64{},
		routeStats:   map[route.RouteKey]*routeStats{},
		backendStats: map[route.BackendKey]*backendStats{},
		connCaps:     map[route.BackendKey]*connCap{},
		limiters:     map[limiterKey]*limiter{},
		timeouts:     timeouts{opts.ConnectTimeout, opts.ReadTimeout, opts.SendTimeout},
	}
	p.authTransport = newTransport(opts, false)
	p.authTransport.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	p.metrics = newMetrics(p)
	if reg != nil {
		if err := reg.Register(p.metrics); err != nil {
			return nil, fmt.Errorf("registering ingress proxy metrics: %w", err)
		}
	}
	return p, nil
}

// Swap makes t the route table for new requests. Requests in flight finish with the table they
// started with; endpoint state, rotations and counters carry over by key.
func (p *Proxy) Swap(t *route.Table) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if old := p.state.Load(); old != nil && extends(old.table, t) {
		p.state.Store(p.extend(old, t))
		return
	}
	st := &state{table: t, pools: make([]*pool, len(t.Backends)), backends: make([]*backendStats, len(t.Backends)), routes: make([]*routeStats, len(t.Routes))}
	liveEPs := make(map[netip.AddrPort]bool, len(p.endpoints))
	liveBackends := make(map[route.BackendKey]bool, len(t.Backends))
	for i, b := range t.Backends {
		liveBackends[b.Key()] = true
		for _, a := range b.Endpoints {
			liveEPs[a] = true
		}
		st.pools[i], st.backends[i] = p.backendState(b)
	}
	liveRoutes := make(map[route.RouteKey]bool, len(t.Routes))
	for i, r := range t.Routes {
		liveRoutes[r.Key()] = true
		st.routes[i] = p.routeState(r)
	}
	for a, e := range p.endpoints {
		if !liveEPs[a] {
			e.gone.Store(true)
			e.idle.closeAll()
			delete(p.endpoints, a)
		}
	}
	for k := range p.rotations {
		if !liveBackends[k] {
			delete(p.rotations, k)
			delete(p.backendStats, k)
			delete(p.connCaps, k)
		}
	}
	p.keepLimiters(t)
	p.basicOK.Clear()
	for k, rs := range p.routeStats {
		if !liveRoutes[k] {
			p.metrics.latency.DeleteLabelValues(rs.labels...)
			delete(p.routeStats, k)
		}
	}
	p.state.Store(st)
}

// extends reports whether t is old with routes and backends added at the end (the route builder
// makes such a table when Ingresses are created): then nothing of old's state is dropped.
func extends(old, t *route.Table) bool {
	if len(t.Routes) < len(old.Routes) || len(t.Backends) < len(old.Backends) {
		return false
	}
	for i, r := range old.Routes {
		if t.Routes[i] != r {
			return false
		}
	}
	for i, b := range old.Backends {
		if t.Backends[i] != b {
			return false
		}
	}
	return true
}

// extend is Swap for a table that extends old's: the state of old's routes and backends (the same
// objects, so the same endpoints) is reused as it is, and only the added ones are looked up, which
// keeps route propagation independent of the number of routes.
func (p *Proxy) extend(old *state, t *route.Table) *state {
	st := &state{table: t, pools: slices.Clip(old.pools), backends: slices.Clip(old.backends), routes: slices.Clip(old.routes)}
	for _, b := range t.Backends[len(old.table.Backends):] {
		pl, bs := p.backendState(b)
		st.pools, st.backends = append(st.pools, pl), append(st.backends, bs)
	}
	for _, r := range t.Routes[len(old.table.Routes):] {
		st.routes = append(st.routes, p.routeState(r))
	}
	p.basicOK.Clear()
	return st
}

// backendState returns the pool and counters of a backend, carrying over its rotation, connection
// cap, counters and endpoints by key. p.mu must be held.
func (p *Proxy) backendState(b *route.Backend) (*pool, *backendStats) {
	key := b.Key()
	rot := p.rotations[key]
	if rot == nil {
		rot = new(atomic.Uint64)
		p.rotations[key] = rot
	}
	bs := p.backendStats[key]
	if bs == nil {
		bs = &backendStats{labels: []string{b.Service.String(), b.Port}}
		p.backendStats[key] = bs
	}
	pl := &pool{rr: rot, h2c: b.H2C, eps: make([]*endpoint, len(b.Endpoints))}
	if n := p.opts.MaxConnsPerBackend; n > 0 {
		cc := p.connCaps[key]
		if cc == nil {
			cc = newConnCap(n)
			p.connCaps[key] = cc
		}
		pl.conns = cc
	}
	for j, a := range b.Endpoints {
		e := p.endpoints[a]
		if e == nil {
			e = &endpoint{addr: a, hostport: a.String(), cookie: cookieValue(a.String())}
			p.endpoints[a] = e
		}
		pl.eps[j] = e
	}
	return pl, bs
}

// routeState returns the counters of a route, carried over by key. p.mu must be held.
func (p *Proxy) routeState(r *route.Route) *routeStats {
	key := r.Key()
	rs := p.routeStats[key]
	if rs == nil {
		host, path := r.Host, r.Path
		if host == "" {
			host = "*"
		}
		if path == "" {
			path = "(default)"
		}
		rs = &routeStats{labels: []string{host, path, r.Ingress.String(), r.Backend.Service.String()}}
		rs.latency = p.metrics.latency.WithLabelValues(rs.labels...)
		p.routeStats[key] = rs
	}
	return rs
}

// Table returns the route table in force, or nil before the first Swap.
func (p *Proxy) Table() *route.Table {
	if st := p.state.Load(); st != nil {
		return st.table
	}
	return nil
}

// Routes lists the route table in force with its counters, for the dashboard.
func (p *Proxy) Routes() []cluster.Route {
	st := p.state.Load()
	if st == nil {
		return nil
	}
	out := make([]cluster.Route, 0, len(st.table.Routes))
	for i, r := range st.table.Routes {
		req, errs := st.routes[i].requests()
		port := r.Backend.Port
		out = append(out, cluster.Route{
			Host: r.Host, Path: r.Path, PathType: r.PathType, TLS: r.TLS, Ingress: r.Ingress,
			Service: r.Backend.Service, Port: port, Endpoints: r.Backend.Ready, Requests: req, Errors: errs,
		})
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Host != out[j].Host {
			return out[i].Host < out[j].Host
		}
		return out[i].Path < out[j].Path
	})
	return slices.Clip(out)
}

// CloseIdleConnections closes pooled upstream connections (at shutdown).
func (p *Proxy) CloseIdleConnections() {
	p.http1.CloseIdleConnections()
	p.h2c.CloseIdleConnections()
	p.authTransport.CloseIdleConnections()
	p.transports.Range(func(_, t any) bool {
		t.(*http.Transport).CloseIdleConnections()
		return true
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.endpoints {
		e.idle.closeAll()
	}
}

// Handler returns the handler for one listener; scheme ("http" or "https") and port are what the
// X-Forwarded-Proto and X-Forwarded-Port headers report.
func (p *Proxy) Handler(scheme string, port int) http.Handler {
	return &handler{p: p, proto: []string{scheme}, port: []string{strconv.Itoa(port)}, tls: scheme == "https"}
}
