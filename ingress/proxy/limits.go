package proxy

import (
	"net/http"
	"net/netip"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/baregate/baregate/ingress/annotations"
	"github.com/baregate/baregate/ingress/route"
)

// connCap bounds the upstream connections a backend (Service port) has in use at once, across all its
// endpoints and all gateway listeners: a flood of slow requests then queues at the gateway instead of
// opening unbounded connections to the pods.
type connCap struct{ slots chan struct{} }

func newConnCap(n int) *connCap { return &connCap{slots: make(chan struct{}, n)} }

func (c *connCap) release() { <-c.slots }

// acquire waits for a connection slot of pl, at most the connect timeout (nginx's max_conns with a
// queue): 503 when none frees up, 499 when the client leaves first.
func (h *handler) acquire(w http.ResponseWriter, r *http.Request, pl *pool, wait time.Duration) (int, bool) {
	select {
	case pl.conns.slots <- struct{}{}:
		return 0, true
	default:
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case pl.conns.slots <- struct{}{}:
		return 0, true
	case <-t.C:
		h.plain(w, http.StatusServiceUnavailable, "the backend has as many connections open as allowed")
		return http.StatusServiceUnavailable, false
	case <-r.Context().Done():
		return statusClientClosed, false
	}
}

type limiterKey struct {
	ingress                     types.NamespacedName
	rps, rpm, conns, multiplier int
}

// limiter is the limit-rps / limit-rpm / limit-connections state of one Ingress, per client IP. It
// outlives route tables (by Ingress and limits), so a sync does not hand every client a new burst.
type limiter struct {
	rps, rpm, conns int
	burst           float64 // multiplier
	mu              sync.Mutex
	clients         map[netip.Addr]*clientState
}

type clientState struct {
	perSec, perMin float64 // tokens left
	last           time.Time
	active         int
}

// maxClients bounds a limiter's memory; beyond it, idle clients with full buckets are forgotten.
const maxClients = 65536

func newLimiterKey(ing types.NamespacedName, l *annotations.RateLimit) limiterKey {
	return limiterKey{ingress: ing, rps: l.RPS, rpm: l.RPM, conns: l.Connections, multiplier: l.BurstMultiplier}
}

func (p *Proxy) limiter(ing types.NamespacedName, l *annotations.RateLimit) *limiter {
	key := newLimiterKey(ing, l)
	p.limitMu.Lock()
	defer p.limitMu.Unlock()
	lim := p.limiters[key]
	if lim == nil {
		lim = &limiter{rps: l.RPS, rpm: l.RPM, conns: l.Connections, burst: float64(l.BurstMultiplier), clients: map[netip.Addr]*clientState{}}
		p.limiters[key] = lim
	}
	return lim
}

// allow takes a token from the client's buckets: each limit allows a burst of rate times the burst
// multiplier, refilled at the rate (nginx's limit_req with burst and nodelay, as ingress-nginx sets it).
func (l *limiter) allow(ip netip.Addr) bool {
	if l.rps == 0 && l.rpm == 0 {
		return true
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.client(ip, now)
	el := now.Sub(c.last).Seconds()
	c.last = now
	ok := true
	if l.rps > 0 {
		c.perSec = min(c.perSec+el*float64(l.rps), float64(l.rps)*l.burst)
		ok = c.perSec >= 1
	}
	if l.rpm > 0 {
		c.perMin = min(c.perMin+el*float64(l.rpm)/60, float64(l.rpm)*l.burst)
		ok = ok && c.perMin >= 1
	}
	if !ok {
		return false
	}
	if l.rps > 0 {
		c.perSec--
	}
	if l.rpm > 0 {
		c.perMin--
	}
	return true
}

func (l *limiter) client(ip netip.Addr, now time.Time) *clientState {
	c := l.clients[ip]
	if c != nil {
		return c
	}
	if len(l.clients) >= maxClients {
		for k, o := range l.clients {
			if o.active == 0 && now.Sub(o.last) > time.Minute {
				delete(l.clients, k)
			}
		}
	}
	c = &clientState{perSec: float64(l.rps) * l.burst, perMin: float64(l.rpm) * l.burst, last: now}
	l.clients[ip] = c
	return c
}

// enter counts a request in progress for the client; false when it already has the maximum.
func (l *limiter) enter(ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.client(ip, time.Now())
	if c.active >= l.conns {
		return false
	}
	c.active++
	return true
}

func (l *limiter) leave(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c := l.clients[ip]; c != nil {
		c.active--
	}
}

type basicKey struct {
	auth   *annotations.BasicAuth
	header string
}

// checkBasic checks basic-auth credentials, remembering successes for a minute per parsed Secret:
// bcrypt costs tens of milliseconds by design, which every request of a browser would pay.
func (p *Proxy) checkBasic(a *annotations.BasicAuth, h http.Header) bool {
	key := basicKey{a, h.Get("Authorization")}
	if key.header == "" {
		return false
	}
	now := time.Now()
	if exp, ok := p.basicOK.Load(key); ok && now.Before(exp.(time.Time)) {
		return true
	}
	if _, ok := a.Check(h); !ok {
		return false
	}
	p.basicOK.Store(key, now.Add(time.Minute))
	return true
}

// keepLimiters forgets the rate-limit state of Ingresses (or limits) no longer in the table.
func (p *Proxy) keepLimiters(t *route.Table) {
	live := map[limiterKey]bool{}
	for _, r := range t.Routes {
		if r.Policy != nil && r.Policy.Nginx != nil && r.Policy.Nginx.RateLimit != nil {
			live[newLimiterKey(r.Ingress, r.Policy.Nginx.RateLimit)] = true
		}
	}
	p.limitMu.Lock()
	defer p.limitMu.Unlock()
	for k := range p.limiters {
		if !live[k] {
			delete(p.limiters, k)
		}
	}
}
