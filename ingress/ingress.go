// Package ingress is baregate's Ingress controller: it serves the Ingresses of its IngressClass on
// HTTP and HTTPS listeners and proxies straight to pod endpoints, swapping route tables atomically.
package ingress

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/baregate/baregate/ingress/proxy"
	"github.com/baregate/baregate/ingress/route"
	"github.com/baregate/baregate/ingress/selfsigned"
	"github.com/baregate/baregate/internal/cluster"
)

// syncStuckAfter is how long a route change may wait unapplied before /healthz fails.
const syncStuckAfter = 30 * time.Second

// Ingress is the ingress component. It implements cluster.Component, cluster.Checker,
// cluster.Leader (Ingress status and Events) and cluster.RouteSource.
type Ingress struct {
	cfg     Config
	deps    cluster.Deps
	svcKey  types.NamespacedName
	proxy   *proxy.Proxy
	runner  *cluster.Runner
	builder route.Builder // used only from the runner's sync
	defCert *tls.Certificate
	metrics *serverMetrics

	snap     atomic.Pointer[cluster.Snapshot]
	problems atomic.Pointer[[]route.Problem]
	serving  atomic.Bool // listeners up
	addrs    atomic.Pointer[[]net.Addr]
	lst      atomic.Pointer[listeners] // while serving
	synced   atomic.Bool               // first table swapped in

	mu     sync.Mutex
	leader *cluster.Runner // status runner while leading; nil otherwise
}

var (
	_ cluster.Component   = (*Ingress)(nil)
	_ cluster.Checker     = (*Ingress)(nil)
	_ cluster.Leader      = (*Ingress)(nil)
	_ cluster.RouteSource = (*Ingress)(nil)
)

// New returns the ingress component; it starts nothing until Run.
func New(cfg Config, deps cluster.Deps) (*Ingress, error) {
	pc := cfg.Policy
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("validating the ingress configuration: %w", err)
	}
	svcKey, _ := cfg.serviceKey()
	p, err := proxy.New(proxy.Options{
		Balance: cfg.Balance, ConnectTimeout: cfg.ConnectTimeout, ReadTimeout: cfg.ReadTimeout, SendTimeout: cfg.SendTimeout,
		ClientSendTimeout:    cfg.ClientSendTimeout,
		PassiveHealthTimeout: cfg.PassiveHealthTimeout, Retries: cfg.Retries, MaxIdleConnsPerEndpoint: cfg.MaxIdleConnsPerEndpoint,
		ServerHeader: cfg.ServerHeader, TrustForwardedHeaders: cfg.TrustForwardedHeaders, AccessLog: cfg.AccessLog,
		DisableFastPath: cfg.DisableFastPath, MaxConnsPerBackend: pc.MaxConnsPerBackend,
		Logger: klog.Background().WithName("ingress"),
	}, deps.Metrics)
	if err != nil {
		return nil, fmt.Errorf("creating the ingress proxy: %w", err)
	}
	def, err := selfsigned.New("baregate default certificate", []string{"ingress.local"}, 10*365*24*time.Hour)
	if err != nil {
		return nil, fmt.Errorf("creating the default certificate: %w", err)
	}
	sm, err := newServerMetrics(deps.Metrics)
	if err != nil {
		return nil, err
	}
	ing := &Ingress{cfg: cfg, deps: deps, svcKey: svcKey, proxy: p, defCert: &def.TLS, metrics: sm}
	ing.builder.Defaults = &pc.Defaults
	ing.runner = cluster.NewRunner("ingress", cfg.MinSyncInterval, 100*time.Millisecond, 10*time.Second, ing.sync)
	return ing, nil
}

// Name implements cluster.Component.
func (i *Ingress) Name() string { return "ingress" }

// Update implements cluster.Component: it keeps the snapshot and asks for a sync, never blocking.
func (i *Ingress) Update(s *cluster.Snapshot) {
	i.snap.Store(s)
	i.runner.Trigger()
	i.mu.Lock()
	if i.leader != nil {
		i.leader.Trigger()
	}
	i.mu.Unlock()
}

// sync builds the route table from the latest snapshot and swaps it in. It cannot fail: bad input
// becomes Problems, which the leader turns into Events.
func (i *Ingress) sync(ctx context.Context) error {
	snap := i.snap.Load()
	if snap == nil {
		return nil // nothing to route yet; the proxy answers 503 until the first snapshot
	}
	start := time.Now()
	t, problems := i.builder.Build(snap)
	if t == i.proxy.Table() {
		// Nothing the routes depend on changed (the builder returns its previous table): the
		// proxy keeps its state as it is.
		i.problems.Store(&problems)
		i.synced.Store(true)
		return nil
	}
	i.proxy.Swap(t)
	i.problems.Store(&problems)
	i.synced.Store(true)
	klog.FromContext(ctx).V(2).Info("Route table applied", "generation", snap.Generation, "routes", len(t.Routes),
		"backends", len(t.Backends), "certificates", t.Certs.Len(), "problems", len(problems), "took", time.Since(start))
	return nil
}

// Run serves the listeners and keeps the route table in step until ctx ends, then drains
// connections for a few seconds.
func (i *Ingress) Run(ctx context.Context) error {
	ctx = klog.NewContext(ctx, klog.FromContext(ctx).WithName("ingress"))
	srv, err := i.listen()
	if err != nil {
		return err
	}
	go i.runner.Run(ctx)
	addrs := srv.addrs()
	i.addrs.Store(&addrs)
	i.lst.Store(srv)
	i.serving.Store(true)
	errc := make(chan error, 2*len(srv.servers)) // per listener, its http.Server and the fast path's accept loop
	srv.serve(errc)
	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("serving ingress traffic: %w", err)
	}
	i.serving.Store(false)
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	srv.shutdown(shutdownCtx)
	i.proxy.CloseIdleConnections()
	return err
}

// Ready implements cluster.Checker: ready once listening with a route table in place.
func (i *Ingress) Ready() error {
	if !i.serving.Load() {
		return errors.New("ingress listeners are not up")
	}
	if !i.synced.Load() {
		return errors.New("no route table applied yet")
	}
	return nil
}

// Healthy implements cluster.Checker: unhealthy when a change has waited too long.
func (i *Ingress) Healthy() error {
	st := i.runner.Status()
	if !st.Healthy(time.Now(), syncStuckAfter) {
		return fmt.Errorf("route table change pending since %s (last error: %v)", st.PendingSince.Format(time.RFC3339), st.LastError)
	}
	return nil
}

// Addrs returns the addresses the listeners are bound to (HTTP first), once Run has started them.
func (i *Ingress) Addrs() []net.Addr {
	if a := i.addrs.Load(); a != nil {
		return *a
	}
	return nil
}

// Routes implements cluster.RouteSource.
func (i *Ingress) Routes() []cluster.Route { return i.proxy.Routes() }

// RunnerStatus reports the route table sync's health, for the dashboard.
func (i *Ingress) RunnerStatus() cluster.RunnerStatus { return i.runner.Status() }
