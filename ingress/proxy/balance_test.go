package proxy

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

func testPool(n int) *pool {
	p := &pool{rr: new(atomic.Uint64)}
	for i := range n {
		a := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 0, byte(i + 1)}), 80)
		p.eps = append(p.eps, &endpoint{addr: a, hostport: a.String()})
	}
	return p
}

func TestPickRoundRobin(t *testing.T) {
	p := testPool(3)
	now := time.Unix(100, 0)
	seen := map[*endpoint]int{}
	for range 30 {
		seen[p.pick(RoundRobin, nil, now)]++
	}
	for _, e := range p.eps {
		if seen[e] != 10 {
			t.Errorf("%s picked %d of 30 times", e.hostport, seen[e])
		}
	}
	// A down endpoint is skipped while others are up, and tried ones are never repeated.
	p.eps[1].downUntil.Store(now.Add(time.Second).UnixNano())
	for range 10 {
		if e := p.pick(RoundRobin, nil, now); e == p.eps[1] {
			t.Fatal("picked an endpoint marked down")
		}
	}
	if e := p.pick(RoundRobin, []*endpoint{p.eps[0], p.eps[2]}, now); e != p.eps[1] {
		t.Errorf("with the others tried, got %v; want the down one as a last resort", e)
	}
	if e := p.pick(RoundRobin, p.eps, now); e != nil {
		t.Errorf("with all tried, got %v", e.hostport)
	}
	// The mark expires.
	later := now.Add(2 * time.Second)
	seen = map[*endpoint]int{}
	for range 30 {
		seen[p.pick(RoundRobin, nil, later)]++
	}
	if seen[p.eps[1]] != 10 {
		t.Errorf("after the mark expired, the endpoint got %d of 30", seen[p.eps[1]])
	}
}

func TestPickLeastInFlight(t *testing.T) {
	p := testPool(4)
	now := time.Unix(100, 0)
	p.eps[0].inflight.Store(5)
	p.eps[1].inflight.Store(5)
	p.eps[2].inflight.Store(5)
	// Power of two: the idle endpoint wins every draw it is part of, and the busiest is never chosen
	// over an idle one.
	idle := 0
	for range 400 {
		if p.pick(LeastInFlight, nil, now) == p.eps[3] {
			idle++
		}
	}
	// It is in a draw of two out of four with probability 1/2.
	if idle < 150 || idle > 250 {
		t.Errorf("idle endpoint chosen %d of 400 times, want about 200", idle)
	}
	p.eps[3].downUntil.Store(now.Add(time.Hour).UnixNano())
	for range 100 {
		if p.pick(LeastInFlight, nil, now) == p.eps[3] {
			t.Fatal("picked a down endpoint while others are up")
		}
	}
	one := testPool(1)
	if one.pick(LeastInFlight, nil, now) != one.eps[0] || one.pick(LeastInFlight, one.eps, now) != nil {
		t.Error("single endpoint pool")
	}
}
