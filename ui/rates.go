package ui

import (
	"time"

	"github.com/baregate/baregate/internal/cluster"
	"k8s.io/apimachinery/pkg/types"
)

// RouteKey identifies an ingress route across route-table generations.
type RouteKey struct {
	Ingress types.NamespacedName
	Host    string
	Path    string
}

func routeKeyOf(r cluster.Route) RouteKey {
	return RouteKey{Ingress: r.Ingress, Host: r.Host, Path: r.Path}
}

// Rate is a route's request and 5xx rate, per second.
type Rate struct {
	Requests, Errors float64
}

// rateTracker turns the proxy's monotonic per-route counters into rates. It resamples only after
// window has passed, so that a map rebuild right after a sample does not divide by a tiny interval.
type rateTracker struct {
	window time.Duration
	at     time.Time
	last   map[RouteKey]cluster.Route
	rates  map[RouteKey]Rate
}

// observe records the counters seen at now and returns the rates over the last full window.
func (t *rateTracker) observe(now time.Time, routes []cluster.Route) map[RouteKey]Rate {
	if t.last != nil && now.Sub(t.at) < t.window {
		return t.rates
	}
	cur := make(map[RouteKey]cluster.Route, len(routes))
	for _, r := range routes {
		cur[routeKeyOf(r)] = r
	}
	if t.last != nil {
		t.rates = computeRates(t.last, cur, now.Sub(t.at))
	}
	t.at, t.last = now, cur
	return t.rates
}

// computeRates is the per-second increase of each counter between two samples dt apart. A counter
// that went down was reset (the gateway restarted), so its new value is the increase.
func computeRates(prev, cur map[RouteKey]cluster.Route, dt time.Duration) map[RouteKey]Rate {
	if dt <= 0 {
		return nil
	}
	secs := dt.Seconds()
	out := make(map[RouteKey]Rate, len(cur))
	for k, c := range cur {
		p, ok := prev[k]
		if !ok {
			continue // no earlier sample: the rate is unknown, not zero
		}
		out[k] = Rate{Requests: delta(p.Requests, c.Requests) / secs, Errors: delta(p.Errors, c.Errors) / secs}
	}
	return out
}

func delta(prev, cur uint64) float64 {
	if cur < prev {
		return float64(cur)
	}
	return float64(cur - prev)
}
