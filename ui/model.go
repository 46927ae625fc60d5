package ui

import "time"

// Kind is the kind of a map node; it also fixes the node's column.
type Kind string

// The node kinds, in map columns from left (outside the cluster) to right (where pods run).
const (
	KindIP       Kind = "ip"
	KindHost     Kind = "host"
	KindRoute    Kind = "route"
	KindService  Kind = "service"
	KindEndpoint Kind = "endpoint"
	KindNode     Kind = "node"
)

// Layer is the column of kind, 0 for the outside world.
func (k Kind) Layer() int {
	switch k {
	case KindIP, KindHost:
		return 0
	case KindRoute:
		return 1
	case KindService:
		return 2
	case KindEndpoint:
		return 3
	default:
		return 4
	}
}

// Health is what colour a node gets.
type Health string

// Healths, from best to worst (see severity).
const (
	HealthOK          Health = "ok"
	HealthExternal    Health = "external"    // ExternalName: forwarded by DNS, not by us
	HealthTerminating Health = "terminating" // some endpoints are terminating
	HealthPending     Health = "pending"     // an LB IP not allocated yet
	HealthNotReady    Health = "notready"    // some endpoints (or a pod, or a node's gateway) not ready
	HealthNoEndpoints Health = "noendpoints" // traffic has nowhere to go
	HealthDown        Health = "down"        // no owner for an IP, node NotReady, backend missing
	HealthErrors      Health = "errors"      // error rate over the threshold
)

func (h Health) severity() int {
	switch h {
	case HealthOK:
		return 0
	case HealthExternal:
		return 1
	case HealthTerminating:
		return 2
	case HealthPending:
		return 3
	case HealthNotReady:
		return 4
	case HealthNoEndpoints:
		return 5
	case HealthDown:
		return 6
	case HealthErrors:
		return 7
	}
	return 0
}

func worse(a, b Health) Health {
	if b.severity() > a.severity() {
		return b
	}
	return a
}

// Field is one line of a node's detail panel.
type Field struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// ObjectRef names the Kubernetes object behind a node, so the page can show its Events.
type ObjectRef struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// Node is one box of the map.
type Node struct {
	ID        string     `json:"id"`
	Kind      Kind       `json:"kind"`
	Label     string     `json:"label"`
	Sub       string     `json:"sub,omitempty"`
	Namespace string     `json:"namespace,omitempty"`
	Health    Health     `json:"health"`
	Fields    []Field    `json:"fields,omitempty"`
	Object    *ObjectRef `json:"object,omitempty"`
}

// Edge is one arrow of the map, from the outside inwards.
type Edge struct {
	From  string `json:"from"`
	To    string `json:"to"`
	Label string `json:"label,omitempty"`
	// RequestRate and ErrorRate are per second, from the ingress route counters; nil when unknown.
	RequestRate *float64 `json:"requestRate,omitempty"`
	ErrorRate   *float64 `json:"errorRate,omitempty"`
	// Failing is set when the error rate is over the configured share of the request rate.
	Failing bool `json:"failing,omitempty"`
}

// Map is the whole service map with the dashboard's tables, built by BuildMap.
type Map struct {
	Generation uint64    `json:"generation"`
	Taken      time.Time `json:"taken"`
	// Gateway is the node whose gateway built the map.
	Gateway     string       `json:"gateway"`
	Namespaces  []string     `json:"namespaces"`
	Nodes       []Node       `json:"nodes"`
	Edges       []Edge       `json:"edges"`
	LBIPs       []LBIPRow    `json:"lbips"`
	Hosts       []HostRow    `json:"hosts"`
	NoEndpoints []ServiceRow `json:"noEndpoints"`
	Forwarding  *Forwarding  `json:"forwarding,omitempty"`
}

// LBIPRow is one external IP of a Service: a LoadBalancer IP or a spec.externalIPs entry.
type LBIPRow struct {
	IP       string     `json:"ip"`
	Kind     string     `json:"kind"` // LoadBalancer or ExternalIP
	Services []string   `json:"services"`
	Pool     string     `json:"pool,omitempty"`
	Owner    string     `json:"owner,omitempty"`
	Since    *time.Time `json:"since,omitempty"`
	Status   string     `json:"status"`
}

// HostRow is one Ingress host with its certificate.
type HostRow struct {
	Host      string     `json:"host"`
	Ingresses []string   `json:"ingresses"`
	Routes    int        `json:"routes"`
	TLS       bool       `json:"tls"`
	Secret    string     `json:"secret,omitempty"`
	NotAfter  *time.Time `json:"notAfter,omitempty"`
	Issuer    string     `json:"issuer,omitempty"`
	Cert      string     `json:"cert"`
	ACME      string     `json:"acme"`
}

// ServiceRow is a Service with no ready endpoint.
type ServiceRow struct {
	Service string `json:"service"`
	Type    string `json:"type"`
	Reason  string `json:"reason"`
}

// Forwarding is the nftables sync state of this node, when nodeport runs.
type Forwarding struct {
	LastSuccess  *time.Time `json:"lastSuccess,omitempty"`
	PendingSince *time.Time `json:"pendingSince,omitempty"`
	LastError    string     `json:"lastError,omitempty"`
	Failures     int        `json:"failures"`
	Services     int        `json:"services"`
	Rules        int        `json:"rules"`
	Elements     int        `json:"elements"`
}
