package acme

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
	"k8s.io/klog/v2"

	"github.com/baregate/baregate/internal/cluster"
)

// Manager keeps ACME certificates for the hosts Hosts lists. Every replica runs one: each loads the
// certificates from the shared cache and answers challenges from it; orders happen only under the
// order Lease, so whichever replica takes it orders and the others find the result in the cache.
// It implements cluster.Component and cluster.ACMESource; the ingress listeners call GetCertificate
// and HTTPHandler.
type Manager struct {
	cfg       Config
	deps      cluster.Deps
	cache     *SecretCache
	lease     *orderLease
	transport http.RoundTripper
	// answer answers tls-alpn-01 and http-01 challenges from the cache, whichever replica put them
	// there. It never orders: only its challenge paths are used.
	answer     *autocert.Manager
	answerHTTP http.Handler
	runner     *cluster.Runner
	orders     atomic.Uint64

	hosts atomic.Pointer[hostList]
	certs atomic.Pointer[map[string]*tls.Certificate] // served certificates by host

	// skipped are the hosts Hosts leaves out for good, which the leader reports (see RunLeader).
	skipped    atomic.Pointer[[]SkippedHost]
	skipRunner atomic.Pointer[cluster.Runner]

	mu    sync.Mutex
	state map[string]*hostState
	// now is the clock renewals are due by (tests move it forward).
	now func() time.Time
}

type hostList struct {
	list []Host
	set  HostSet
}

type hostState struct {
	cert        *tls.Certificate
	failures    int
	nextTry     time.Time
	lastErr     string
	lastAttempt time.Time
	written     string // "namespace/name serial" of the last certificate known to be in the TLS Secret
}

// leaseRetry is how soon a replica that found the order Lease held looks again.
const leaseRetry = 2 * time.Second

var (
	_ cluster.Component  = (*Manager)(nil)
	_ cluster.ACMESource = (*Manager)(nil)
	_ cluster.Leader     = (*Manager)(nil)
)

// New returns a Manager; it starts nothing until Run.
func New(cfg Config, deps cluster.Deps) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ns := cfg.Namespace
	if ns == "" {
		ns = deps.Namespace
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.CAFile != "" {
		pemData, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading --ingress-acme-ca-file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pemData) {
			return nil, fmt.Errorf("--ingress-acme-ca-file %s holds no PEM certificate", cfg.CAFile)
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	m := &Manager{
		cfg:       cfg,
		deps:      deps,
		cache:     &SecretCache{Client: deps.Client, Namespace: ns},
		transport: transport,
		lease:     &orderLease{client: deps.Client, namespace: ns, identity: deps.NodeName + "-" + hex.EncodeToString(suffix), duration: time.Minute},
		state:     map[string]*hostState{},
		now:       time.Now,
	}
	m.answer = &autocert.Manager{Cache: m.cache, HostPolicy: m.hostPolicy}
	m.answerHTTP = m.answer.HTTPHandler(http.NotFoundHandler())
	m.hosts.Store(&hostList{set: HostSet{}})
	m.skipped.Store(&[]SkippedHost{})
	m.certs.Store(&map[string]*tls.Certificate{})
	m.runner = cluster.NewRunner("ingress-acme", 100*time.Millisecond, 2*time.Second, 30*time.Second, m.sync)
	if deps.Metrics != nil {
		c := prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "baregate_ingress_acme_orders_total",
			Help: "ACME orders this gateway created (each is one certificate request to the CA).",
		}, func() float64 { return float64(m.orders.Load()) })
		if err := deps.Metrics.Register(c); err != nil {
			return nil, fmt.Errorf("registering ACME metrics: %w", err)
		}
	}
	return m, nil
}

// Update implements cluster.Component: it takes the hosts that want certificates from a new snapshot; it never blocks.
// Without a directory (ACME off) the Manager stays inert: no hosts, no Secrets read or written.
func (m *Manager) Update(snap *cluster.Snapshot) {
	if m.cfg.DirectoryURL == "" {
		return
	}
	list := Hosts(snap, m.cfg.AllTLSHosts)
	m.hosts.Store(&hostList{list: list, set: NewHostSet(list)})
	m.runner.Trigger()
	skipped := Skipped(snap)
	m.skipped.Store(&skipped)
	if r := m.skipRunner.Load(); r != nil {
		r.Trigger()
	}
}

// Name implements cluster.Component.
func (m *Manager) Name() string { return "ingress-acme" }

// Run implements cluster.Component: it keeps the certificates until ctx ends, loading, ordering and
// renewing them.
func (m *Manager) Run(ctx context.Context) error {
	ctx = klog.NewContext(ctx, klog.FromContext(ctx).WithName("acme"))
	go m.runner.Run(ctx)
	// Renewals and retries after back-off are due by the clock, not by a cluster change.
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			m.runner.Trigger()
		}
	}
}

// Orders is how many ACME orders this Manager created.
func (m *Manager) Orders() uint64 { return m.orders.Load() }

func (m *Manager) hostPolicy(_ context.Context, host string) error {
	if _, ok := m.hosts.Load().set[normalize(host)]; !ok {
		return fmt.Errorf("acme: host %q is not an ACME host of a served Ingress", host)
	}
	return nil
}

func normalize(host string) string {
	if h, _, ok := strings.Cut(host, ":"); ok && !strings.Contains(h, "]") {
		host = h
	}
	return strings.TrimSuffix(strings.ToLower(host), ".")
}

// GetCertificate returns the certificate for an ACME host, or the tls-alpn-01 challenge answer when
// the CA's validator asks for one; nil (and no error) for every other name, which the caller serves
// as before.
func (m *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := normalize(hello.ServerName)
	if _, ok := m.hosts.Load().set[name]; !ok {
		return nil, nil
	}
	if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acme.ALPNProto {
		h := *hello
		h.ServerName = name
		return m.answer.GetCertificate(&h)
	}
	return (*m.certs.Load())[name], nil
}

// HTTPHandler answers http-01 challenges for ACME hosts and sends every other request to next (a
// Service behind an Ingress may answer challenges of its own, for hosts that are not baregate's).
func (m *Manager) HTTPHandler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/") && m.hostPolicy(r.Context(), r.Host) == nil {
			m.answerHTTP.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// ACMECertificates implements cluster.ACMESource.
func (m *Manager) ACMECertificates() []cluster.ACMECertificate {
	hosts := m.hosts.Load().list
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]cluster.ACMECertificate, 0, len(hosts))
	for _, h := range hosts {
		c := cluster.ACMECertificate{Host: h.Name, Ingress: keyOf(h.Ingress), Secret: h.Secret, State: cluster.ACMEPending}
		if st := m.state[h.Name]; st != nil {
			c.LastError, c.LastAttempt = st.lastErr, st.lastAttempt
			if st.cert != nil {
				c.NotAfter, c.RenewAt = st.cert.Leaf.NotAfter, m.renewAt(st.cert.Leaf)
				c.State = cluster.ACMEIssued
			}
			if st.lastErr != "" {
				c.State = cluster.ACMEFailed
			}
		}
		out = append(out, c)
	}
	return out
}

// renewAt is when a certificate is due for renewal: RenewBefore before expiry, or a third of its
// lifetime before if that is sooner to expiry (short-lived certificates).
func (m *Manager) renewAt(leaf *x509.Certificate) time.Time {
	before := min(m.cfg.RenewBefore, leaf.NotAfter.Sub(leaf.NotBefore)/3)
	return leaf.NotAfter.Add(-before)
}

func (m *Manager) due(c *tls.Certificate) bool {
	return c == nil || !m.now().Before(m.renewAt(c.Leaf))
}

// sync brings every host's certificate up to date. A host's failure does not hold up the others; it
// is retried after its own back-off. Only a held Lease makes the whole sync retry soon.
func (m *Manager) sync(ctx context.Context) error {
	hosts := m.hosts.Load().list
	var errs []error
	waiting := false
	for _, h := range hosts {
		err := m.syncHost(ctx, h)
		switch {
		case errors.Is(err, errLeaseHeld):
			waiting = true
		case err != nil:
			errs = append(errs, err)
		}
	}
	if waiting {
		// Another replica is ordering: look for its result in the cache again soon. Not an error.
		klog.FromContext(ctx).V(2).Info("Waiting for the ACME order Lease")
		time.AfterFunc(leaseRetry, m.runner.Trigger)
	}
	m.mu.Lock()
	served := map[string]*tls.Certificate{}
	for name, st := range m.state {
		if !slices.ContainsFunc(hosts, func(h Host) bool { return h.Name == name }) {
			delete(m.state, name)
		} else if st.cert != nil {
			served[name] = st.cert
		}
	}
	m.mu.Unlock()
	m.certs.Store(&served)
	return errors.Join(errs...)
}

func (m *Manager) stateOf(name string) *hostState {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.state[name]
	if st == nil {
		st = &hostState{}
		m.state[name] = st
	}
	return st
}

// update changes a host's state under the lock the status readers take.
func (m *Manager) update(st *hostState, f func(*hostState)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f(st)
}
