package proxy

import (
	"math/rand/v2"
	"net/netip"
	"sync/atomic"
	"time"
)

// Balancing algorithms.
const (
	RoundRobin    = "round-robin"
	LeastInFlight = "least-inflight"
)

// endpoint is the proxy's state for one endpoint address. It lives outside route tables, keyed by
// address, so that in-flight counts and passive-health marks survive table swaps.
type endpoint struct {
	addr     netip.AddrPort
	hostport string // addr formatted once, for request URLs
	cookie   string // the affinity cookie value naming it
	inflight atomic.Int64
	// downUntil is when (unix nanoseconds) an endpoint that refused a connection may be tried again.
	downUntil atomic.Int64
	idle      h1Idle // the fast path's keep-alive connections
	// gone is set when the endpoint leaves the tables: event loops close their idle connections to it.
	gone atomic.Bool
}

func (e *endpoint) down(now int64) bool { return e.downUntil.Load() > now }

// pool is one backend's endpoints in one table, with the backend's round-robin counter, which is
// shared across tables so that endpoint changes do not restart the rotation.
type pool struct {
	eps   []*endpoint
	rr    *atomic.Uint64
	h2c   bool
	conns *connCap // nil: no bound on connections
}

// pick chooses an endpoint not in tried, preferring ones not marked down. It returns nil when every
// endpoint has been tried.
func (p *pool) pick(algo string, tried []*endpoint, now time.Time) *endpoint {
	n := len(p.eps)
	if n == 0 {
		return nil
	}
	ns := now.UnixNano()
	usable := func(e *endpoint) bool {
		for _, t := range tried {
			if t == e {
				return false
			}
		}
		return !e.down(ns)
	}
	if n == 1 {
		if e := p.eps[0]; len(tried) == 0 {
			return e
		}
		return nil
	}
	if algo == LeastInFlight {
		// Power of two choices: two random distinct endpoints, the less loaded wins.
		i := rand.IntN(n)
		j := rand.IntN(n - 1)
		if j >= i {
			j++
		}
		a, b := p.eps[i], p.eps[j]
		ua, ub := usable(a), usable(b)
		switch {
		case ua && ub:
			if b.inflight.Load() < a.inflight.Load() {
				return b
			}
			return a
		case ua:
			return a
		case ub:
			return b
		}
	} else {
		start := p.rr.Add(1)
		for k := range uint64(n) {
			if e := p.eps[(start+k)%uint64(n)]; usable(e) {
				return e
			}
		}
	}
	// Every untried endpoint is marked down (or p2c drew two bad ones): scan, and when all are down
	// try one anyway; a refusal costs little, a 503 while the backend has recovered costs a request.
	var fallback *endpoint
	for _, e := range p.eps {
		if usable(e) {
			return e
		}
		if fallback == nil && !contains(tried, e) {
			fallback = e
		}
	}
	return fallback
}

func contains(s []*endpoint, e *endpoint) bool {
	for _, x := range s {
		if x == e {
			return true
		}
	}
	return false
}
