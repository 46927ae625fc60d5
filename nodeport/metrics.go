package nodeport

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the component's Prometheus collectors, named after kube-proxy's where they mean the same.
type metrics struct {
	syncDuration       *prometheus.HistogramVec
	syncFailures       prometheus.Counter
	rules              prometheus.Gauge
	elements           prometheus.Gauge
	programmingLatency prometheus.Histogram
	lastSync           prometheus.Gauge
	conntrackDeleted   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		syncDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "baregate", Subsystem: "nodeport", Name: "sync_duration_seconds",
			Help:    "Time to compute and program the nftables rules, by kind of sync (full or partial).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}, []string{"kind"}),
		syncFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "baregate", Subsystem: "nodeport", Name: "sync_failures_total",
			Help: "Syncs whose nftables transaction failed (the next sync is a full one).",
		}),
		rules: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "baregate", Subsystem: "nodeport", Name: "rules",
			Help: "nftables rules programmed in baregate's tables.",
		}),
		elements: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "baregate", Subsystem: "nodeport", Name: "elements",
			Help: "Set and map elements programmed in baregate's tables.",
		}),
		programmingLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "baregate", Subsystem: "nodeport", Name: "network_programming_duration_seconds",
			Help:    "Time from a change to a Service's endpoints (the EndpointSlice's last-change-trigger-time) to its rules being programmed on this node.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 16),
		}),
		lastSync: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "baregate", Subsystem: "nodeport", Name: "last_sync_timestamp_seconds",
			Help: "When the rules were last programmed successfully.",
		}),
		conntrackDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "baregate", Subsystem: "nodeport", Name: "conntrack_entries_deleted_total",
			Help: "Stale UDP conntrack entries deleted after their endpoint went away.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.syncDuration, m.syncFailures, m.rules, m.elements, m.programmingLatency, m.lastSync, m.conntrackDeleted} {
		errs = append(errs, reg.Register(c))
	}
	return m, errors.Join(errs...)
}
