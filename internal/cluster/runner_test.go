package cluster

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// waitFor polls cond; the bound is generous because it only guards against hangs.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func startRunner(t *testing.T, r *Runner) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func TestRunnerSyncsAtOnceWithoutTrigger(t *testing.T) {
	var n atomic.Int32
	r := NewRunner("t", time.Hour, time.Second, time.Second, func(context.Context) error { n.Add(1); return nil })
	startRunner(t, r)
	waitFor(t, "first sync", func() bool { return n.Load() == 1 })
	if st := r.Status(); !st.PendingSince.IsZero() || st.LastSuccess.IsZero() {
		t.Errorf("after the first sync: %+v", st)
	}
}

func TestRunnerCoalescesBursts(t *testing.T) {
	var n atomic.Int32
	release := make(chan struct{})
	var once sync.Once
	r := NewRunner("t", 20*time.Millisecond, time.Second, time.Second, func(context.Context) error {
		if n.Add(1) == 1 {
			<-release // hold the first sync while a burst arrives
		}
		return nil
	})
	startRunner(t, r)
	waitFor(t, "first sync to start", func() bool { return n.Load() == 1 })
	for range 1000 {
		r.Trigger()
	}
	if st := r.Status(); st.PendingSince.IsZero() {
		t.Error("triggers during a sync must stay pending")
	}
	once.Do(func() { close(release) })
	waitFor(t, "burst to be applied", func() bool { return r.Status().PendingSince.IsZero() })
	time.Sleep(50 * time.Millisecond) // room for spurious extra syncs to show up
	if got := n.Load(); got != 2 {
		t.Errorf("a burst of 1000 triggers during one sync gave %d syncs in all, want 2", got)
	}
}

func TestRunnerRateLimitsButAppliesLoneChangeAtOnce(t *testing.T) {
	var times []time.Time
	var mu sync.Mutex
	r := NewRunner("t", 200*time.Millisecond, time.Second, time.Second, func(context.Context) error {
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
		return nil
	})
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(times) }
	startRunner(t, r)
	waitFor(t, "first sync", func() bool { return count() == 1 })
	r.Trigger()
	r.Trigger()
	waitFor(t, "second sync", func() bool { return count() == 2 })
	time.Sleep(250 * time.Millisecond)
	lone := time.Now()
	r.Trigger()
	waitFor(t, "third sync", func() bool { return count() == 3 })
	mu.Lock()
	defer mu.Unlock()
	if gap := times[1].Sub(times[0]); gap < 200*time.Millisecond {
		t.Errorf("second sync came %v after the first; the minimum interval is 200ms", gap)
	}
	// A lone change after a quiet period is not held back by the rate limit. The bound is the
	// interval itself: waiting for it would mean the limiter delayed the change.
	if wait := times[2].Sub(lone); wait >= 200*time.Millisecond {
		t.Errorf("a lone change waited %v", wait)
	}
}

func TestRunnerBacksOffAndRecovers(t *testing.T) {
	var calls []time.Time
	var mu sync.Mutex
	r := NewRunner("t", 0, 30*time.Millisecond, time.Second, func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, time.Now())
		if len(calls) <= 3 {
			return errors.New("nft: boom")
		}
		return nil
	})
	startRunner(t, r)
	waitFor(t, "recovery", func() bool { return r.Status().LastError == nil && !r.Status().LastSuccess.IsZero() })
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 4 {
		t.Fatalf("got %d calls, want 3 failures then 1 success", len(calls))
	}
	for i, want := range []time.Duration{30 * time.Millisecond, 60 * time.Millisecond, 120 * time.Millisecond} {
		if gap := calls[i+1].Sub(calls[i]); gap < want {
			t.Errorf("retry %d came after %v, want at least %v (exponential back-off)", i+1, gap, want)
		}
	}
	if st := r.Status(); st.Failures != 0 || !st.PendingSince.IsZero() {
		t.Errorf("status after recovery: %+v", st)
	}
}

func TestRunnerStatusHealthy(t *testing.T) {
	now := time.Unix(100, 0)
	if !(RunnerStatus{}).Healthy(now, time.Second) {
		t.Error("nothing pending is healthy")
	}
	if (RunnerStatus{PendingSince: now.Add(-2 * time.Second)}).Healthy(now, time.Second) {
		t.Error("a change pending longer than allowed is unhealthy")
	}
}
