package gateway

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"

	"github.com/baregate/baregate/internal/cluster"
)

// LeaderElection configures the Lease that picks the one gateway doing cluster-wide writes.
type LeaderElection struct {
	Enabled       bool
	LeaseName     string
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration
}

// runLeaderElection campaigns for the Lease until ctx ends, running the leaders' RunLeader while
// it holds it. Losing the Lease cancels them and campaigns again; it never exits the process, since
// the node-local data plane must keep serving whoever leads.
func runLeaderElection(ctx context.Context, cfg LeaderElection, client kubernetes.Interface, namespace, identity string,
	leaders []cluster.Leader, isLeader prometheus.Gauge) {
	logger := klog.FromContext(ctx)
	if !cfg.Enabled {
		isLeader.Set(1)
		runLeaders(ctx, leaders)
		return
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: namespace, Name: cfg.LeaseName},
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: identity},
	}
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   cfg.LeaseDuration,
			RenewDeadline:   cfg.RenewDeadline,
			RetryPeriod:     cfg.RetryPeriod,
			ReleaseOnCancel: true,
			Name:            cfg.LeaseName,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(lctx context.Context) {
					logger.Info("Became leader", "lease", klog.KRef(namespace, cfg.LeaseName))
					isLeader.Set(1)
					runLeaders(lctx, leaders)
				},
				OnStoppedLeading: func() {
					isLeader.Set(0)
					logger.Info("Stopped leading", "lease", klog.KRef(namespace, cfg.LeaseName))
				},
			},
		})
		if err != nil {
			logger.Error(err, "Configuring leader election")
			return
		}
		le.Run(ctx)
	}
}

// runLeaders runs every leader until ctx ends and all of them have returned.
func runLeaders(ctx context.Context, leaders []cluster.Leader) {
	var wg sync.WaitGroup
	for _, l := range leaders {
		wg.Go(func() {
			if err := l.RunLeader(ctx); err != nil && ctx.Err() == nil {
				klog.FromContext(ctx).Error(err, "Leader work ended")
			}
		})
	}
	wg.Wait()
}
