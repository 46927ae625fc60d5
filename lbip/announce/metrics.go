package announce

import "github.com/prometheus/client_golang/prometheus"

// Metrics count the announcer's traffic, by protocol ("arp" or "ndp").
type Metrics struct {
	Requests   *prometheus.CounterVec
	Replies    *prometheus.CounterVec
	Gratuitous *prometheus.CounterVec
	Conflicts  *prometheus.CounterVec
}

// NewMetrics creates the announcer's counters and registers them with reg, when not nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	vec := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "baregate", Subsystem: "lbip", Name: name, Help: help}, []string{"protocol"})
	}
	m := &Metrics{
		Requests:   vec("requests_total", "ARP requests and NDP neighbor solicitations received for IPs this node announces."),
		Replies:    vec("replies_total", "ARP replies and NDP neighbor advertisements sent in answer."),
		Gratuitous: vec("gratuitous_total", "Gratuitous ARP and unsolicited neighbor advertisements sent on taking an IP over."),
		Conflicts:  vec("conflicts_total", "IPs refused because another host answered the probe for them."),
	}
	if reg != nil {
		reg.MustRegister(m.Requests, m.Replies, m.Gratuitous, m.Conflicts)
	}
	return m
}
