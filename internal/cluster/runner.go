package cluster

import (
	"context"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// Runner calls a sync function when triggered, coalescing triggers: a quiet change syncs at once, a
// storm gives one sync per MinInterval on average, and a failed sync is retried with exponential
// back-off (the caller keeps serving its last good state meanwhile). It is the design's "sync
// runner"; every component drives its apply step with one.
//
// The rate limit is a token bucket of runnerBurst syncs refilled at one per MinInterval, as
// kube-proxy's BoundedFrequencyRunner: a change that follows one recent sync (the usual case: a
// Deployment's new Pod gives a slice update, then another) is still applied at once instead of
// waiting out the rest of MinInterval; only a third sync within MinInterval waits.
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
// runnerBurst is how many syncs may follow one another without waiting.
const runnerBurst = 2

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
	bucket := tokenBucket{per: r.minInterval, tokens: runnerBurst}
	retry := time.NewTimer(0)
	<-retry.C
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		case <-retry.C:
		}
		if wait := bucket.wait(r.now()); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
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

		bucket.take(r.now())
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

// tokenBucket allows runnerBurst syncs at once and one more per per; per == 0 allows any rate.
type tokenBucket struct {
	per    time.Duration
	tokens float64
	at     time.Time // when tokens was last brought up to date; zero before the first take
}

func (b *tokenBucket) refill(now time.Time) {
	if b.per <= 0 || b.at.IsZero() {
		return
	}
	b.tokens = min(runnerBurst, b.tokens+float64(now.Sub(b.at))/float64(b.per))
	b.at = now
}

// wait is how long until a token is free.
func (b *tokenBucket) wait(now time.Time) time.Duration {
	if b.per <= 0 {
		return 0
	}
	b.refill(now)
	if b.tokens >= 1 {
		return 0
	}
	return time.Duration((1 - b.tokens) * float64(b.per))
}

// take spends a token (the caller waited for one).
func (b *tokenBucket) take(now time.Time) {
	if b.per <= 0 {
		return
	}
	b.refill(now)
	b.tokens = max(0, b.tokens-1)
	b.at = now
}
