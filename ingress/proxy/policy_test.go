package proxy

import (
	"fmt"
	"net/netip"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/baregate/baregate/ingress/annotations"
)

// TestByHashMovesOnlyTheNewShare: rendezvous hashing keeps every key on its endpoint when one is
// added, except the keys the new endpoint takes (about 1/n of them).
func TestByHashMovesOnlyTheNewShare(t *testing.T) {
	p := testPool(6)
	small := &pool{eps: p.eps[:5]}
	moved, toNew := 0, 0
	const keys = 3000
	for k := range keys {
		key := fmt.Sprintf("user-%d", k)
		before, after := small.byHash(key), p.byHash(key)
		if before != after {
			moved++
			if after == p.eps[5] {
				toNew++
			}
		}
	}
	if moved != toNew {
		t.Errorf("%d keys moved between old endpoints", moved-toNew)
	}
	if toNew < keys/6-150 || toNew > keys/6+150 {
		t.Errorf("the new endpoint took %d of %d keys, want about %d", toNew, keys, keys/6)
	}
	// A down endpoint's keys go elsewhere; others stay.
	p.eps[0].downUntil.Store(1 << 62)
	for k := range 100 {
		if p.byHash(fmt.Sprint(k)) == p.eps[0] {
			t.Fatal("a down endpoint was chosen")
		}
	}
}

// TestLimiterBurstAndConnections: limit-rps allows rate × multiplier at once, then refuses; clients
// are counted apart; limit-connections counts requests in progress.
func TestLimiterBurstAndConnections(t *testing.T) {
	p, err := New(Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ing := types.NamespacedName{Namespace: "default", Name: "web"}
	l := p.limiter(ing, &annotations.RateLimit{RPS: 2, BurstMultiplier: 3, Connections: 2})
	if again := p.limiter(ing, &annotations.RateLimit{RPS: 2, BurstMultiplier: 3, Connections: 2}); again != l {
		t.Error("the same Ingress and limits got a new limiter")
	}
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	allowed := 0
	for range 10 {
		if l.allow(a) {
			allowed++
		}
	}
	if allowed != 6 {
		t.Errorf("%d of 10 back-to-back requests allowed, want the burst of 6", allowed)
	}
	if !l.allow(b) {
		t.Error("another client was limited")
	}
	if first, second, third := l.enter(a), l.enter(a), l.enter(a); !first || !second || third {
		t.Error("limit-connections 2 did not refuse the third request in progress")
	}
	l.leave(a)
	if !l.enter(a) {
		t.Error("a finished request did not free its slot")
	}
}
