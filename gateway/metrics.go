package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	snapshotDuration   prometheus.Histogram
	eventLatency       prometheus.Histogram
	snapshotGeneration prometheus.Gauge
	services           prometheus.Gauge
	leader             prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		snapshotDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "baregate_snapshot_duration_seconds", Help: "Time to build a cluster snapshot from the informer caches and hand it to the components.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		// The gateway's share of network programming latency (kube-proxy's metric counts from the
		// EndpointSlice's trigger time): from an informer event to the components holding a snapshot
		// with it. Components measure the rest, up to their data plane.
		eventLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "baregate_snapshot_event_latency_seconds", Help: "Time from the oldest informer event a cluster snapshot includes to the snapshot being handed to the components.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}),
		snapshotGeneration: prometheus.NewGauge(prometheus.GaugeOpts{Name: "baregate_snapshot_generation", Help: "Generation of the latest cluster snapshot."}),
		services:           prometheus.NewGauge(prometheus.GaugeOpts{Name: "baregate_services", Help: "Services in the latest cluster snapshot."}),
		leader:             prometheus.NewGauge(prometheus.GaugeOpts{Name: "baregate_leader", Help: "1 while this gateway holds the leader Lease for cluster-wide writes."}),
	}
	reg.MustRegister(m.snapshotDuration, m.eventLatency, m.snapshotGeneration, m.services, m.leader)
	return m
}
