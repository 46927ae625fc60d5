// Package lab runs a real Kubernetes control plane and a bridged network of node and client namespaces on
// one Linux host, so that baregate's tests, benchmarks and demo exercise it as a user's cluster would.
package lab
