// Package gateway is baregate's composition root: it watches the cluster with one informer factory,
// builds Snapshots, hands them to the components this node runs, elects the leader for cluster-wide
// writes and serves /healthz, /readyz, /livez and /metrics.
package gateway
