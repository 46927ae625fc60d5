// Package allocator gives LoadBalancer Services their IPs from MetalLB IPAddressPools: a pure Allocate
// over the cluster snapshot, and a leader-only writer that puts the result into Service status.
package allocator
