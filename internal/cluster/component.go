package cluster

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
)

// Component is one of the jobs a gateway runs on its node (lbip, nodeport, ingress, ui). The gateway
// hands every new Snapshot to Update; the component turns it into its desired state with a pure Build
// function and applies it from Run. Constructors start no goroutines: Run does, and returns when ctx
// ends, leaving the data plane in place.
type Component interface {
	// Name is a short lower-case name, used in logs, metrics and health checks.
	Name() string
	// Update hands over a newer snapshot. It must not block; a component keeps only the latest.
	Update(*Snapshot)
	// Run does the component's work until ctx ends.
	Run(ctx context.Context) error
}

// Checker is implemented by components that take part in /readyz and /healthz.
type Checker interface {
	// Ready reports nil once the component serves (first sync applied, gossip joined ...).
	Ready() error
	// Healthy reports nil unless the component is stuck (a change not applied in time).
	Healthy() error
}

// Deps are what the gateway gives every component's constructor.
type Deps struct {
	// NodeName is the node this gateway runs on.
	NodeName string
	// Namespace is where the gateway runs: Leases and Secrets it owns live there.
	Namespace string
	// Client talks to the API server (status writes, Events, Leases, Secrets).
	Client kubernetes.Interface
	// Recorder emits Events on the objects a component is about (bad input, allocations ...).
	Recorder record.EventRecorder
	// Metrics is where a component registers its Prometheus collectors, served on /metrics.
	Metrics prometheus.Registerer
}
