package allocator

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	allocations *prometheus.CounterVec
	pool        *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		allocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "baregate", Subsystem: "lbip", Name: "allocations_total",
			Help: "LoadBalancer IP allocation outcomes written by this gateway while leader: allocated (a Service's IPs set or changed), released (cleared), refused (by reason).",
		}, []string{"result", "reason"}),
		pool: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "baregate", Subsystem: "lbip", Name: "pool_addresses",
			Help: "Addresses of each IPAddressPool by family and state (assigned or available), as last computed by the leader.",
		}, []string{"pool", "family", "state"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.allocations, m.pool} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering allocator metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) setPools(pools []PoolStatus) {
	m.pool.Reset()
	for _, p := range pools {
		if p.Err != nil {
			continue
		}
		s := p.Status
		m.pool.WithLabelValues(p.Name, "ipv4", "assigned").Set(float64(s.AssignedIPv4))
		m.pool.WithLabelValues(p.Name, "ipv4", "available").Set(float64(s.AvailableIPv4))
		m.pool.WithLabelValues(p.Name, "ipv6", "assigned").Set(float64(s.AssignedIPv6))
		m.pool.WithLabelValues(p.Name, "ipv6", "available").Set(float64(s.AvailableIPv6))
	}
}
