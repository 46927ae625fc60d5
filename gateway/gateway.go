package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/baregate/baregate/internal/cluster"
)

// Run runs the gateway until ctx ends (SIGTERM). On return the data plane stays as it is: nftables
// rules keep forwarding and the next start reconciles them without a gap.
func Run(ctx context.Context, cfg *Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	ctx = klog.NewContext(ctx, klog.FromContext(ctx).WithValues("node", cfg.NodeName))
	logger := klog.FromContext(ctx)

	restCfg, err := restConfig(cfg)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("creating Kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("creating dynamic client: %w", err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := newMetrics(reg)

	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartStructuredLogging(4)
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "baregate", Host: cfg.NodeName})

	deps := cluster.Deps{NodeName: cfg.NodeName, Namespace: cfg.Namespace, Client: client, Recorder: recorder, Metrics: reg}
	comps, err := buildComponents(cfg, deps, dyn)
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", cfg.AdminAddress)
	if err != nil {
		return fmt.Errorf("listening on --admin-address: %w", err)
	}
	g := &gateway{cfg: cfg, comps: comps, metrics: m, first: make(chan struct{})}
	g.watch = newWatcher(cfg.NodeName, cfg.EnableUI, cfg.EnableIngress, client, dyn, livenessOf(comps), func() { g.snapshots.Trigger() })
	g.snapshots = cluster.NewRunner("snapshot", cfg.SnapshotInterval, 100*time.Millisecond, 5*time.Second, g.publish)

	admin := &adminServer{gather: reg, ready: g.readyChecks(), healthy: g.healthChecks()}
	var wg sync.WaitGroup
	errs := make(chan error, 1+len(comps))
	wg.Go(func() {
		if err := admin.run(ctx, ln); err != nil {
			errs <- err
		}
	})

	logger.Info("Starting baregate", "components", names(comps), "namespace", cfg.Namespace)
	if err := g.watch.start(ctx); err != nil {
		wg.Wait()
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	logger.Info("Informer caches synced")
	wg.Go(func() { g.snapshots.Run(ctx) })
	// Components start only once they hold a snapshot of synced caches: a forwarding plane
	// started on an empty view would withdraw every Service it programmed before a restart.
	select {
	case <-g.first:
	case <-ctx.Done():
		wg.Wait()
		return nil
	}
	for _, c := range comps {
		wg.Go(func() {
			if err := c.Run(ctx); err != nil && ctx.Err() == nil {
				logger.Error(err, "Component stopped", "component", c.Name())
				errs <- fmt.Errorf("component %s: %w", c.Name(), err)
			}
		})
	}
	if leaders := leadersOf(comps); len(leaders) > 0 || cfg.LeaderElection.Enabled {
		identity := cfg.NodeName
		wg.Go(func() {
			runLeaderElection(ctx, cfg.LeaderElection, client, cfg.Namespace, identity, leaders, m.leader)
		})
	}

	var runErr error
	select {
	case <-ctx.Done():
		logger.Info("Shutting down; the data plane stays in place")
	case runErr = <-errs:
	}
	wg.Wait()
	return runErr
}

// gateway holds the state of one Run.
type gateway struct {
	cfg       *Config
	comps     []cluster.Component
	metrics   *metrics
	watch     *watcher
	snapshots *cluster.Runner

	latest    atomic.Pointer[cluster.Snapshot]
	first     chan struct{} // closed once the first snapshot is handed out
	firstOnce sync.Once
}

// publish builds a snapshot from the caches and hands it to every component.
func (g *gateway) publish(ctx context.Context) error {
	start := time.Now()
	snap, since := g.watch.snapshot(ctx)
	g.latest.Store(snap)
	for _, c := range g.comps {
		c.Update(snap)
	}
	now := time.Now()
	g.metrics.snapshotDuration.Observe(now.Sub(start).Seconds())
	if !since.IsZero() {
		g.metrics.eventLatency.Observe(now.Sub(since).Seconds())
	}
	g.metrics.snapshotGeneration.Set(float64(snap.Generation))
	g.metrics.services.Set(float64(len(snap.Services)))
	g.firstOnce.Do(func() { close(g.first) })
	return nil
}

func (g *gateway) readyChecks() []check {
	checks := []check{
		{"informers", func() error {
			if !g.watch.synced() {
				return errors.New("informer caches not synced")
			}
			return nil
		}},
		{"snapshot", func() error {
			if g.latest.Load() == nil {
				return errors.New("no cluster snapshot yet")
			}
			return nil
		}},
	}
	for _, c := range g.comps {
		if ch, ok := c.(cluster.Checker); ok {
			checks = append(checks, check{c.Name(), ch.Ready})
		}
	}
	return checks
}

func (g *gateway) healthChecks() []check {
	var checks []check
	for _, c := range g.comps {
		if ch, ok := c.(cluster.Checker); ok {
			checks = append(checks, check{c.Name(), ch.Healthy})
		}
	}
	return checks
}

func restConfig(cfg *Config) (*rest.Config, error) {
	var rc *rest.Config
	var err error
	if cfg.Kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("loading Kubernetes client configuration: %w", err)
	}
	rc.QPS, rc.Burst = cfg.APIQPS, cfg.APIBurst
	rc.UserAgent = "baregate/" + cfg.NodeName
	return rc, nil
}

func livenessOf(comps []cluster.Component) cluster.Liveness {
	for _, c := range comps {
		if l, ok := c.(cluster.Liveness); ok {
			return l
		}
	}
	return nil
}

func leadersOf(comps []cluster.Component) []cluster.Leader {
	var out []cluster.Leader
	for _, c := range comps {
		if l, ok := c.(cluster.Leader); ok {
			out = append(out, l)
		}
	}
	return out
}

func names(comps []cluster.Component) []string {
	var out []string
	for _, c := range comps {
		out = append(out, c.Name())
	}
	return out
}
