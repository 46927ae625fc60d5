package cluster

import (
	"context"
	"net/netip"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// The interfaces below are how components hand live state to each other through the gateway without
// importing each other: lbip provides Liveness (folded into every Snapshot) and Announcements, nodeport
// ForwardingStatus, ingress Routes; the dashboard reads them.

// Leader is implemented by components that write cluster-wide state (Service or Ingress status). The
// gateway calls RunLeader while it holds the leader Lease and cancels ctx when it loses it.
type Leader interface {
	RunLeader(ctx context.Context) error
}

// Liveness is the gossip's view of which nodes run a live gateway.
type Liveness interface {
	// LiveNodes returns the live nodes by name; nil while there is no view yet.
	LiveNodes() map[string]bool
	// Changed is signalled (without blocking the sender) whenever LiveNodes changes.
	Changed() <-chan struct{}
}

// Announcement says which node answers ARP/NDP for one external IP.
type Announcement struct {
	IP       netip.Addr
	Services []types.NamespacedName
	Pool     string
	// Node is the owner chosen by the pure owner function over live members; empty when no node is
	// eligible (for example externalTrafficPolicy Local with no ready endpoint).
	Node string
	// Since is when this gateway first saw Node own the IP.
	Since time.Time
	// Interfaces the owner announces on, when restricted by the L2Advertisement.
	Interfaces []string
}

// AnnouncementSource lists the current announcements, as seen from this node.
type AnnouncementSource interface {
	Announcements() []Announcement
}

// ForwardingInfo is the state of this node's nftables programming.
type ForwardingInfo struct {
	Runner RunnerStatus
	// Generation is that of the Snapshot the rules in force were built from; 0 before the first.
	Generation uint64
	Services   int
	Rules      int
	Elements   int
	// Verdicts holds, for each Service, a one-line summary of what its rules do (for the dashboard).
	Verdicts map[types.NamespacedName]string
}

// ForwardingSource reports this node's forwarding state.
type ForwardingSource interface {
	ForwardingStatus() ForwardingInfo
}

// Route is one host/path route of the ingress route table.
type Route struct {
	Host     string // empty for any host
	Path     string
	PathType string
	TLS      bool
	Ingress  types.NamespacedName
	Service  types.NamespacedName
	Port     string // Service port name or number
	// Endpoints is the number of ready endpoints behind the route.
	Endpoints int
	// Requests and Errors (5xx) are counters since the gateway started.
	Requests, Errors uint64
}

// RouteSource lists the ingress route table in force.
type RouteSource interface {
	Routes() []Route
}
