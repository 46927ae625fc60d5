// Package cluster is baregate's ground floor: the read-only Snapshot of cluster state that every
// component turns into its desired state, and the coalescing Runner that drives each component's sync.
package cluster
