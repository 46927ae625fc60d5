package lbip

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	members   prometheus.Gauge
	ownership *prometheus.CounterVec
	announced prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		members: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "baregate", Subsystem: "lbip", Name: "members",
			Help: "Gateways the gossip considers live, this one included."}),
		ownership: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "baregate", Subsystem: "lbip", Name: "ownership_changes_total",
			Help: "IPs this node started (gained) or stopped (lost) owning."}, []string{"change"}),
		announced: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "baregate", Subsystem: "lbip", Name: "announced_ips",
			Help: "IPs this node answers ARP/NDP for."}),
	}
	if reg != nil {
		reg.MustRegister(m.members, m.ownership, m.announced)
	}
	return m
}
