package ui

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/baregate/baregate/internal/cluster"
	"github.com/gin-gonic/gin"
	"k8s.io/klog/v2"
)

var (
	_ cluster.Component = (*Server)(nil)
	_ cluster.Checker   = (*Server)(nil)
)

// Sources are the other components' status interfaces; a nil one means that component is off.
type Sources struct {
	Announcements cluster.AnnouncementSource
	Forwarding    cluster.ForwardingSource
	Routes        cluster.RouteSource
	ACME          cluster.ACMESource
}

// Server is the dashboard component: it rebuilds the map on every snapshot and on a timer (for the
// live state that changes without one) and serves it.
type Server struct {
	cfg     Config
	deps    cluster.Deps
	sources Sources
	handler http.Handler
	runner  *cluster.Runner
	hub     *hub
	warn    warningStore
	now     func() time.Time

	snap    atomic.Pointer[cluster.Snapshot]
	current atomic.Pointer[builtMap]
	rates   rateTracker // used by the runner's goroutine only

	mu    sync.Mutex
	addrs []string
}

type builtMap struct {
	m       *Map
	version uint64
	sum     [32]byte
}

// New returns the dashboard server; it starts nothing until Run.
func New(cfg Config, deps cluster.Deps, sources Sources) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("validating the dashboard configuration: %w", err)
	}
	s := &Server{cfg: cfg, deps: deps, sources: sources, hub: newHub(), now: time.Now,
		rates: rateTracker{window: cfg.RefreshInterval}}
	empty := BuildMap(cluster.NewSnapshot(0, time.Time{}, cluster.Inputs{NodeName: deps.NodeName}), Live{})
	s.current.Store(&builtMap{m: empty})
	s.runner = cluster.NewRunner("ui", 200*time.Millisecond, time.Second, 30*time.Second, s.rebuild)
	s.handler = s.routes()
	return s, nil
}

// Name implements cluster.Component.
func (s *Server) Name() string { return "ui" }

// Update implements cluster.Component: it keeps the snapshot and asks for a rebuild.
func (s *Server) Update(snap *cluster.Snapshot) {
	s.snap.Store(snap)
	s.runner.Trigger()
}

// Ready reports nil once the dashboard listens.
func (s *Server) Ready() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.addrs) == 0 {
		return errors.New("the dashboard is not listening yet")
	}
	return nil
}

// Healthy reports nil unless map rebuilds are stuck; the dashboard never affects traffic.
func (s *Server) Healthy() error {
	if st := s.runner.Status(); !st.Healthy(s.now(), time.Minute) {
		return fmt.Errorf("the service map has not been rebuilt since %v: %v", st.PendingSince, st.LastError)
	}
	return nil
}

// Addrs returns the addresses the dashboard listens on, once it does.
func (s *Server) Addrs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.addrs...)
}

// Handler serves the dashboard; Run serves it on the configured addresses.
func (s *Server) Handler() http.Handler { return s.handler }

// Map returns the latest map.
func (s *Server) Map() *Map { return s.current.Load().m }

// Run serves the dashboard until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithName("ui")
	ctx = klog.NewContext(ctx, logger)
	type listener struct {
		l net.Listener
		h http.Handler
	}
	var ls []listener
	closeAll := func() {
		for _, l := range ls {
			_ = l.l.Close()
		}
	}
	if s.cfg.Address != "" {
		l, err := net.Listen("tcp", s.cfg.Address)
		if err != nil {
			return fmt.Errorf("listening on the dashboard address %s: %w", s.cfg.Address, err)
		}
		ls = append(ls, listener{l, loopbackHostOnly(s.handler)})
	}
	if s.cfg.UnauthenticatedAddress != "" {
		l, err := net.Listen("tcp", s.cfg.UnauthenticatedAddress)
		if err != nil {
			closeAll()
			return fmt.Errorf("listening on the unauthenticated dashboard address %s: %w", s.cfg.UnauthenticatedAddress, err)
		}
		logger.Info("Serving the dashboard without authentication", "address", l.Addr().String())
		ls = append(ls, listener{l, s.handler})
	}

	var wg sync.WaitGroup
	var servers []*http.Server
	for _, l := range ls {
		srv := &http.Server{Handler: l.h, ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
		servers = append(servers, srv)
		wg.Go(func() {
			if err := srv.Serve(l.l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error(err, "Dashboard listener failed", "address", l.l.Addr().String())
			}
		})
		s.mu.Lock()
		s.addrs = append(s.addrs, l.l.Addr().String())
		s.mu.Unlock()
		logger.Info("Serving the dashboard", "address", "http://"+l.l.Addr().String()+"/")
	}
	wg.Go(func() { s.runner.Run(ctx) })
	wg.Go(func() { s.refreshLoop(ctx) })
	if s.deps.Client != nil {
		wg.Go(func() { s.pollWarnings(ctx) })
	}

	<-ctx.Done()
	s.hub.close()
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	for _, srv := range servers {
		_ = srv.Shutdown(shutdownCtx)
	}
	wg.Wait()
	return nil
}

// refreshLoop rebuilds the map on a timer: IP owners and route counters change without a snapshot.
func (s *Server) refreshLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.runner.Trigger()
		}
	}
}

// live reads the other components' state now.
func (s *Server) live(now time.Time) Live {
	l := Live{ErrorThreshold: s.cfg.ErrorThreshold}
	if s.sources.Announcements != nil {
		l.Announcements = s.sources.Announcements.Announcements()
		if l.Announcements == nil {
			l.Announcements = []cluster.Announcement{}
		}
	}
	if s.sources.Forwarding != nil {
		f := s.sources.Forwarding.ForwardingStatus()
		l.Forwarding = &f
	}
	if s.sources.Routes != nil {
		l.Routes = s.sources.Routes.Routes()
		if l.Routes == nil {
			l.Routes = []cluster.Route{}
		}
		l.Rates = s.rates.observe(now, l.Routes)
	}
	if s.sources.ACME != nil {
		l.ACME = s.sources.ACME.ACMECertificates()
		if l.ACME == nil {
			l.ACME = []cluster.ACMECertificate{}
		}
	}
	return l
}

// rebuild is the runner's sync: build the map and tell the streams when it changed.
func (s *Server) rebuild(ctx context.Context) error {
	snap := s.snap.Load()
	if snap == nil {
		return nil
	}
	m := BuildMap(snap, s.live(s.now()))
	sum, err := contentSum(m)
	if err != nil {
		return fmt.Errorf("hashing the service map: %w", err)
	}
	prev := s.current.Load()
	next := &builtMap{m: m, version: prev.version, sum: sum}
	if sum != prev.sum {
		next.version++
	}
	s.current.Store(next)
	if next.version != prev.version {
		klog.FromContext(ctx).V(4).Info("Service map changed", "generation", m.Generation, "version", next.version)
		s.hub.publish(next.version)
	}
	return nil
}

// contentSum hashes a map without its generation and time, which change with every snapshot even
// when nothing the dashboard shows did.
func contentSum(m *Map) ([32]byte, error) {
	c := *m
	c.Generation, c.Taken = 0, time.Time{}
	b, err := json.Marshal(&c)
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(b), nil
}

// loopbackHostOnly refuses requests whose Host is a DNS name other than localhost: a page on
// another site could otherwise rebind its name to 127.0.0.1 and read the unauthenticated dashboard.
func loopbackHostOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if hh, _, err := net.SplitHostPort(host); err == nil {
			host = hh
		}
		host = strings.Trim(host, "[]")
		if host != "localhost" && net.ParseIP(host) == nil {
			http.Error(w, "the dashboard answers only to IP addresses and localhost", http.StatusMisdirectedRequest)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func parseQuery(c *gin.Context) (Query, error) {
	q := Query{Namespace: c.Query("ns"), Text: strings.TrimSpace(c.Query("q"))}
	for _, ns := range strings.Split(c.Query("expand"), ",") {
		if ns != "" {
			q.Expand = append(q.Expand, ns)
		}
	}
	for name, dst := range map[string]*int{"pods": &q.PodLimit, "max": &q.MaxServices} {
		if v := c.Query(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 100000 {
				return q, fmt.Errorf("query parameter %s=%q: want a number from 1 to 100000", name, v)
			}
			*dst = n
		}
	}
	return q, nil
}

func writeJSON(c *gin.Context, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(true)
	if err := enc.Encode(v); err != nil {
		c.AbortWithStatusJSON(http.StatusInternalServerError, gin.H{"error": err.Error()})
		return
	}
	writeBody(c, "application/json; charset=utf-8", buf.Bytes())
}
