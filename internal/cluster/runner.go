package cluster

import (
	"context"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// Runner calls a sync function when triggered, coalescing triggers: a lone trigger after a quiet
// period syncs at once, a burst gives one sync at most every MinInterval, and a failed sync is retried
// with exponential back-off (the caller keeps serving its last good state meanwhile). It is the
// design's "sync runner"; every component drives its apply step with one.
type Runner struct {
	name        string
	fn          func(context.Context) error
	minInterval time.Duration
	minBackoff  time.Duration
	maxBackoff  time.Duration
	now         func() time.Time

	kick chan struct{}

	mu        sync.Mutex
	pendingAt time.Time // oldest trigger not yet covered by a successful sync; zero when none
	syncing   bool
	laterAt   time.Time // first trigger since the running sync started
	seq       uint64    // triggers so far
	lastOK    time.Time
	lastErr   error
	failures  int
}

// NewRunner returns a Runner for fn. minInterval bounds the sync rate; failures back off from
// minBackoff doubling to maxBackoff.
func NewRunner(name string, minInterval, minBackoff, maxBackoff time.Duration, fn func(context.Context) error) *Runner {
	return &Runner{
		name:        name,
		fn:          fn,
		minInterval: minInterval,
		minBackoff:  minBackoff,
		maxBackoff:  maxBackoff,
		now:         time.Now,
		kick:        make(chan struct{}, 1),
	}
}

// Trigger asks for a sync. It never blocks.
func (r *Runner) Trigger() {
	r.mu.Lock()
	now := r.now()
	r.seq++
	if r.pendingAt.IsZero() {
		r.pendingAt = now
	}
	if r.syncing && r.laterAt.IsZero() {
		r.laterAt = now
	}
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// RunnerStatus is a Runner's health, for /healthz and the dashboard.
type RunnerStatus struct {
	Name string
	// PendingSince is when the oldest trigger not yet synced arrived; zero when in step.
	PendingSince time.Time
	LastSuccess  time.Time
	LastError    error
	Failures     int
}

// Status reports the Runner's health.
func (r *Runner) Status() RunnerStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return RunnerStatus{Name: r.name, PendingSince: r.pendingAt, LastSuccess: r.lastOK, LastError: r.lastErr, Failures: r.failures}
}

// Healthy reports, as kube-proxy's /healthz does, whether no change has waited longer than within
// without being applied.
func (st RunnerStatus) Healthy(now time.Time, within time.Duration) bool {
	return st.PendingSince.IsZero() || now.Sub(st.PendingSince) <= within
}

// Run syncs until ctx ends. The first sync happens at once, without waiting for a trigger.
func (r *Runner) Run(ctx context.Context) {
	logger := klog.FromContext(ctx).WithValues("runner", r.name)
	r.Trigger()
	var last time.Time
	retry := time.NewTimer(0)
	<-retry.C
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		case <-retry.C:
		}
		if wait := r.minInterval - r.now().Sub(last); !last.IsZero() && wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		// Drain the kick so triggers that arrived while waiting are covered by this sync.
		select {
		case <-r.kick:
		default:
		}
		r.mu.Lock()
		if r.pendingAt.IsZero() {
			r.mu.Unlock()
			continue
		}
		r.syncing, r.laterAt = true, time.Time{}
		startSeq := r.seq
		r.mu.Unlock()

		last = r.now()
		err := r.fn(ctx)

		r.mu.Lock()
		r.syncing = false
		if err == nil {
			r.lastOK, r.lastErr, r.failures = r.now(), nil, 0
			// Triggers that arrived while syncing stay pending: the sync may not have seen them.
			if r.seq == startSeq {
				r.pendingAt = time.Time{}
			} else {
				r.pendingAt = r.laterAt
			}
		} else {
			r.lastErr = err
			r.failures++
		}
		failures := r.failures
		r.mu.Unlock()

		if err != nil {
			backoff := r.minBackoff << min(failures-1, 20)
			if backoff > r.maxBackoff || backoff <= 0 {
				backoff = r.maxBackoff
			}
			logger.Error(err, "Sync failed; keeping the last good state and retrying", "failures", failures, "retryIn", backoff)
			if !retry.Stop() {
				select {
				case <-retry.C:
				default:
				}
			}
			retry.Reset(backoff)
			continue
		}
		r.mu.Lock()
		again := !r.pendingAt.IsZero()
		r.mu.Unlock()
		if again {
			select {
			case r.kick <- struct{}{}:
			default:
			}
		}
	}
}
