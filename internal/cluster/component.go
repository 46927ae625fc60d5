package cluster

import "context"

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
