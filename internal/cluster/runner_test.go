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

func TestRunnerRateLimitsButAppliesQuietChangesAtOnce(t *testing.T) {
	const interval = 500 * time.Millisecond
	var times []time.Time
	var mu sync.Mutex
	r := NewRunner("t", interval, time.Second, time.Second, func(context.Context) error {
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
		return nil
	})
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(times) }
	at := func(i int) time.Time { mu.Lock(); defer mu.Unlock(); return times[i] }
	startRunner(t, r)
	waitFor(t, "first sync", func() bool { return count() == 1 })
	// A change right after a sync is still applied at once (the burst), as is a lone change after a
	// quiet period. The bound is the interval itself: reaching it would mean the limiter held the
	// change back.
	second := time.Now()
	r.Trigger()
	waitFor(t, "second sync", func() bool { return count() == 2 })
	if wait := at(1).Sub(second); wait >= interval {
		t.Errorf("a change right after one sync waited %v", wait)
	}
	// A third within the interval is a storm: it waits for its turn.
	r.Trigger()
	r.Trigger()
	waitFor(t, "third sync", func() bool { return count() == 3 })
	if gap := at(2).Sub(at(0)); gap < interval {
		t.Errorf("three syncs within %v; the limit is %d per %v beyond the burst", gap, runnerBurst, interval)
	}
	time.Sleep(interval + 100*time.Millisecond)
	lone := time.Now()
	r.Trigger()
	waitFor(t, "fourth sync", func() bool { return count() == 4 })
	if wait := at(3).Sub(lone); wait >= interval {
		t.Errorf("a lone change after a quiet period waited %v", wait)
	}
	time.Sleep(50 * time.Millisecond)
	if n := count(); n != 4 {
		t.Errorf("%d syncs for 4 changes", n)
	}
}

func TestTokenBucket(t *testing.T) {
	t0 := time.Unix(100, 0)
	b := tokenBucket{per: time.Second, tokens: runnerBurst}
	for i := range runnerBurst {
		if w := b.wait(t0); w != 0 {
			t.Fatalf("sync %d of the burst waits %v", i+1, w)
		}
		b.take(t0)
	}
	if w := b.wait(t0.Add(300 * time.Millisecond)); w != 700*time.Millisecond {
		t.Errorf("after the burst: wait %v, want the rest of the interval, 700ms", w)
	}
	b.take(t0.Add(time.Second))
	if w := b.wait(t0.Add(time.Second)); w != time.Second {
		t.Errorf("in a storm: wait %v, want one interval", w)
	}
	if w := b.wait(t0.Add(time.Hour)); w != 0 {
		t.Errorf("after an hour's quiet: wait %v", w)
	}
	if b.tokens != runnerBurst {
		t.Errorf("tokens after a long quiet = %v, want the burst %d (no more)", b.tokens, runnerBurst)
	}
	free := tokenBucket{}
	for range 10 {
		free.take(t0)
		if w := free.wait(t0); w != 0 {
			t.Fatalf("no interval: wait %v", w)
		}
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
