package ui

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/baregate/baregate/internal/cluster"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Live is the other components' state at one moment, as read from their status interfaces. A nil
// field means the component does not run on this gateway.
type Live struct {
	Announcements []cluster.Announcement
	Forwarding    *cluster.ForwardingInfo
	Routes        []cluster.Route
	// ACME is the ingress's ACME state per host; nil when ACME is off or not reported.
	ACME []cluster.ACMECertificate
	// Rates are the routes' request rates over the last sampling window.
	Rates map[RouteKey]Rate
	// ErrorThreshold is the share of 5xx responses above which a route counts as failing.
	ErrorThreshold float64
}

// graph accumulates nodes and edges, merging repeated ones.
type graph struct {
	nodes map[string]*Node
	edges map[[2]string]*Edge
}

func (g *graph) node(n Node) *Node {
	if old, ok := g.nodes[n.ID]; ok {
		return old
	}
	g.nodes[n.ID] = &n
	return &n
}

func (g *graph) edge(from, to, label string) *Edge {
	k := [2]string{from, to}
	if e, ok := g.edges[k]; ok {
		if label != "" && !slices.Contains(strings.Split(e.Label, ", "), label) {
			e.Label = strings.TrimPrefix(e.Label+", "+label, ", ")
		}
		return e
	}
	e := &Edge{From: from, To: to, Label: label}
	g.edges[k] = e
	return e
}

// BuildMap is the dashboard's pure core: the map of where traffic goes, from the snapshot and the
// live state of the other components.
func BuildMap(snap *cluster.Snapshot, live Live) *Map {
	g := &graph{nodes: map[string]*Node{}, edges: map[[2]string]*Edge{}}
	m := &Map{Generation: snap.Generation, Taken: snap.Taken, Gateway: snap.NodeName}

	namespaces := map[string]bool{}
	svcHealth := map[types.NamespacedName]Health{}
	for _, svc := range snap.Services {
		namespaces[svc.Namespace] = true
		h := addService(g, snap, svc, live)
		svcHealth[svc.Key()] = h
		if row, ok := noEndpointsRow(svc); ok {
			m.NoEndpoints = append(m.NoEndpoints, row)
		}
	}
	for _, n := range snap.Nodes {
		addNode(g, snap, n.Name)
	}
	m.LBIPs = addExternalIPs(g, snap, live, svcHealth)
	m.Hosts = addIngresses(g, snap, live, svcHealth, namespaces)
	if live.Forwarding != nil {
		m.Forwarding = forwardingSummary(*live.Forwarding)
	}

	for ns := range namespaces {
		m.Namespaces = append(m.Namespaces, ns)
	}
	slices.Sort(m.Namespaces)
	for _, n := range g.nodes {
		m.Nodes = append(m.Nodes, *n)
	}
	slices.SortFunc(m.Nodes, func(a, b Node) int {
		return cmp.Or(cmp.Compare(a.Kind.Layer(), b.Kind.Layer()), strings.Compare(a.ID, b.ID))
	})
	for _, e := range g.edges {
		m.Edges = append(m.Edges, *e)
	}
	slices.SortFunc(m.Edges, func(a, b Edge) int {
		return cmp.Or(strings.Compare(a.From, b.From), strings.Compare(a.To, b.To))
	})
	return m
}

func serviceID(k types.NamespacedName) string { return "svc:" + k.String() }
func nodeID(name string) string               { return "node:" + name }

// addService adds a Service, its endpoints and their nodes, and returns the Service's health.
func addService(g *graph, snap *cluster.Snapshot, svc *cluster.Service, live Live) Health {
	id := serviceID(svc.Key())
	n := g.node(Node{ID: id, Kind: KindService, Label: svc.Name, Namespace: svc.Namespace,
		Object: &ObjectRef{Kind: "Service", Namespace: svc.Namespace, Name: svc.Name}})
	n.Fields = serviceFields(svc, live)
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		n.Health, n.Sub = HealthExternal, "ExternalName → "+svc.Spec.ExternalName
		return n.Health
	}
	ready, terminating := 0, 0
	for _, ep := range svc.Endpoints {
		epID := addEndpoint(g, snap, svc, ep)
		g.edge(id, epID, endpointPortsLabel(svc, ep))
		if ep.NodeName != "" {
			addNode(g, snap, ep.NodeName)
			g.edge(epID, nodeID(ep.NodeName), "")
		}
		switch {
		case ep.Ready:
			ready++
		case ep.Terminating:
			terminating++
		}
	}
	addr := "headless"
	if svc.Spec.ClusterIP != corev1.ClusterIPNone {
		addr = string(svc.Spec.Type) + " " + svc.Spec.ClusterIP
	}
	n.Sub = fmt.Sprintf("%s · %d/%d ready", strings.TrimSpace(addr), ready, len(svc.Endpoints))
	switch {
	case ready == 0:
		n.Health = HealthNoEndpoints
	case terminating > 0:
		n.Health = HealthTerminating
	case ready < len(svc.Endpoints):
		n.Health = HealthNotReady
	default:
		n.Health = HealthOK
	}
	return n.Health
}

func serviceFields(svc *cluster.Service, live Live) []Field {
	s := svc.Spec
	f := []Field{{"Type", string(s.Type)}}
	if s.Type == corev1.ServiceTypeExternalName {
		return append(f, Field{"External name", s.ExternalName})
	}
	if s.ClusterIP == corev1.ClusterIPNone {
		f = append(f, Field{"Cluster IP", "None (headless: DNS only, not forwarded)"})
	} else if len(s.ClusterIPs) > 0 {
		f = append(f, Field{"Cluster IPs", strings.Join(s.ClusterIPs, ", ")})
	}
	var ports []string
	for _, p := range s.Ports {
		ports = append(ports, servicePortString(p))
	}
	f = append(f, Field{"Ports", strings.Join(ports, ", ")})
	if len(s.Selector) > 0 {
		f = append(f, Field{"Selector", selectorString(s.Selector)})
	} else {
		f = append(f, Field{"Selector", "none (endpoints managed by hand)"})
	}
	if s.ExternalTrafficPolicy != "" {
		f = append(f, Field{"External traffic policy", string(s.ExternalTrafficPolicy)})
	}
	if s.InternalTrafficPolicy != nil {
		f = append(f, Field{"Internal traffic policy", string(*s.InternalTrafficPolicy)})
	}
	if s.SessionAffinity != "" && s.SessionAffinity != corev1.ServiceAffinityNone {
		f = append(f, Field{"Session affinity", string(s.SessionAffinity)})
	}
	if s.LoadBalancerClass != nil {
		f = append(f, Field{"Load balancer class", *s.LoadBalancerClass})
	}
	if len(s.ExternalIPs) > 0 {
		f = append(f, Field{"External IPs", strings.Join(s.ExternalIPs, ", ")})
	}
	if live.Forwarding != nil {
		v, ok := live.Forwarding.Verdicts[svc.Key()]
		if !ok {
			v = "no rules"
		}
		f = append(f, Field{"nftables", v})
	}
	return f
}

func servicePortString(p corev1.ServicePort) string {
	s := fmt.Sprintf("%d/%s", p.Port, cmp.Or(p.Protocol, corev1.ProtocolTCP))
	if p.Name != "" {
		s = p.Name + " " + s
	}
	if p.TargetPort.String() != "0" && p.TargetPort.String() != "" {
		s += " → " + p.TargetPort.String()
	}
	if p.NodePort != 0 {
		s += fmt.Sprintf(" (node port %d)", p.NodePort)
	}
	return s
}

func selectorString(sel map[string]string) string {
	var parts []string
	for k, v := range sel {
		parts = append(parts, k+"="+v)
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// endpointPortsLabel says which Service port reaches which endpoint port ("80→8080/TCP").
func endpointPortsLabel(svc *cluster.Service, ep cluster.Endpoint) string {
	var parts []string
	for _, p := range svc.Spec.Ports {
		proto := cmp.Or(p.Protocol, corev1.ProtocolTCP)
		if target, ok := ep.Port(p.Name, proto); ok {
			parts = append(parts, fmt.Sprintf("%d→%d/%s", p.Port, target, proto))
		}
	}
	return strings.Join(parts, ", ")
}

// addEndpoint adds the pod (or bare address, for Services without selector) behind an endpoint.
func addEndpoint(g *graph, snap *cluster.Snapshot, svc *cluster.Service, ep cluster.Endpoint) string {
	health := HealthNotReady
	state := "not ready"
	switch {
	case ep.Ready:
		health, state = HealthOK, "ready"
	case ep.Terminating:
		health, state = HealthTerminating, "terminating"
	}
	if ep.Pod == nil {
		n := g.node(Node{ID: "ep:" + ep.Addr.String(), Kind: KindEndpoint, Label: ep.Addr.String(),
			Namespace: svc.Namespace, Health: health, Sub: "address · " + state})
		n.Fields = []Field{{"Address", ep.Addr.String()}, {"State", state}, {"Node", cmp.Or(ep.NodeName, "unknown")}}
		return n.ID
	}
	id := "pod:" + ep.Pod.String()
	n, seen := g.nodes[id], true
	if n == nil {
		seen = false
		n = g.node(Node{ID: id, Kind: KindEndpoint, Label: ep.Pod.Name, Namespace: ep.Pod.Namespace, Health: health,
			Object: &ObjectRef{Kind: "Pod", Namespace: ep.Pod.Namespace, Name: ep.Pod.Name}})
	}
	if !seen {
		n.Sub = ep.Addr.String() + " · " + state
		n.Fields = []Field{{"Addresses", ep.Addr.String()}, {"State", state}, {"Node", cmp.Or(ep.NodeName, "unknown")}}
		if pod := snap.Pods[*ep.Pod]; pod != nil {
			n.Fields = append(n.Fields, Field{"Phase", string(pod.Status.Phase)})
			if pod.DeletionTimestamp != nil {
				n.Fields = append(n.Fields, Field{"Deleting since", pod.DeletionTimestamp.UTC().Format(time.RFC3339)})
			}
			if owner := controllerOf(pod); owner != "" {
				n.Fields = append(n.Fields, Field{"Controlled by", owner})
			}
		}
		return id
	}
	// A dual-stack pod shows up once per address family, and a pod may back several Services.
	if addrs := &n.Fields[0]; !slices.Contains(strings.Split(addrs.Value, ", "), ep.Addr.String()) {
		addrs.Value += ", " + ep.Addr.String()
	}
	if health.severity() < n.Health.severity() {
		n.Health, n.Fields[1].Value = health, state
		n.Sub = strings.Split(n.Sub, " · ")[0] + " · " + state
	}
	return id
}

func controllerOf(pod *corev1.Pod) string {
	for _, o := range pod.OwnerReferences {
		if o.Controller != nil && *o.Controller {
			return o.Kind + "/" + o.Name
		}
	}
	return ""
}

// addNode adds a Kubernetes node, healthy when it is Ready and its gateway is live.
func addNode(g *graph, snap *cluster.Snapshot, name string) {
	if _, ok := g.nodes[nodeID(name)]; ok {
		return
	}
	n := g.node(Node{ID: nodeID(name), Kind: KindNode, Label: name, Health: HealthOK,
		Object: &ObjectRef{Kind: "Node", Name: name}})
	node := snap.Nodes[name]
	if node == nil {
		n.Health, n.Sub = HealthDown, "not in the API"
		return
	}
	ready := "unknown"
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			ready = string(c.Status)
		}
	}
	gateway := "live"
	if !snap.NodeLive(name) {
		gateway = "down"
	}
	var addrs []string
	for _, a := range node.Status.Addresses {
		if a.Type == corev1.NodeInternalIP || a.Type == corev1.NodeExternalIP {
			addrs = append(addrs, a.Address)
		}
	}
	n.Sub = strings.Join(append(slices.Clone(addrs[:min(1, len(addrs))]), "gateway "+gateway), " · ")
	if name == snap.NodeName {
		n.Sub += " · this gateway"
	}
	n.Fields = []Field{{"Ready", ready}, {"Gateway", gateway}, {"Addresses", strings.Join(addrs, ", ")}}
	if len(node.Spec.PodCIDRs) > 0 {
		n.Fields = append(n.Fields, Field{"Pod CIDRs", strings.Join(node.Spec.PodCIDRs, ", ")})
	}
	switch {
	case ready == string(corev1.ConditionFalse):
		n.Health = HealthDown
	case gateway == "down" || ready != string(corev1.ConditionTrue):
		n.Health = HealthNotReady
	}
}

func forwardingSummary(f cluster.ForwardingInfo) *Forwarding {
	out := &Forwarding{Failures: f.Runner.Failures, Services: f.Services, Rules: f.Rules, Elements: f.Elements}
	if !f.Runner.LastSuccess.IsZero() {
		t := f.Runner.LastSuccess
		out.LastSuccess = &t
	}
	if !f.Runner.PendingSince.IsZero() {
		t := f.Runner.PendingSince
		out.PendingSince = &t
	}
	if f.Runner.LastError != nil {
		out.LastError = f.Runner.LastError.Error()
	}
	return out
}

func noEndpointsRow(svc *cluster.Service) (ServiceRow, bool) {
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return ServiceRow{}, false
	}
	ready, terminating := 0, 0
	for _, ep := range svc.Endpoints {
		if ep.Ready {
			ready++
		} else if ep.Terminating {
			terminating++
		}
	}
	if ready > 0 {
		return ServiceRow{}, false
	}
	reason := "no endpoints"
	switch {
	case terminating > 0:
		reason = fmt.Sprintf("all %d endpoints terminating", terminating)
	case len(svc.Endpoints) > 0:
		reason = fmt.Sprintf("none of %d endpoints ready", len(svc.Endpoints))
	case len(svc.Spec.Selector) == 0:
		reason = "no selector and no EndpointSlices"
	case len(svc.Slices) == 0:
		reason = "no EndpointSlices yet"
	default:
		reason = "selector matches no ready pod"
	}
	return ServiceRow{Service: svc.Key().String(), Type: string(svc.Spec.Type), Reason: reason}, true
}

// routeID names a route node; paths may hold any character, so it is quoted.
func routeID(ing types.NamespacedName, host, path string) string {
	return "route:" + ing.String() + ":" + host + strconv.Quote(path)
}

func ingressBackendService(ns string, b *networkingv1.IngressBackend) (types.NamespacedName, string, bool) {
	if b == nil || b.Service == nil {
		return types.NamespacedName{}, "", false
	}
	port := b.Service.Port.Name
	if port == "" {
		port = strconv.Itoa(int(b.Service.Port.Number))
	}
	return types.NamespacedName{Namespace: ns, Name: b.Service.Name}, port, true
}
