package nodeport

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/knftables"

	"github.com/baregate/baregate/internal/cluster"
)

// The fixtures describe a two-node cluster from DESIGN.md's address plan: node-a (192.0.2.11, pods
// 198.18.1.0/24, zone z1) is the node under test, node-b (192.0.2.12, pods 198.18.2.0/24, zone z2).
const (
	nodeA = "node-a"
	nodeB = "node-b"
)

var testOpts = Options{MasqueradeMark: 0x4000}

type world struct {
	services []*corev1.Service
	slices   []*discoveryv1.EndpointSlice
	live     map[string]bool
	node     string
}

func (w *world) snapshot() *cluster.Snapshot {
	node := w.node
	if node == "" {
		node = nodeA
	}
	return cluster.NewSnapshot(1, time.Unix(0, 0), cluster.Inputs{
		NodeName: node, Services: w.services, EndpointSlices: w.slices, Nodes: worldNodes(), LiveNodes: w.live,
	})
}

// builder returns a cluster.Builder holding w, as the gateway keeps one: its snapshots share what did
// not change.
func (w *world) builder() *cluster.Builder {
	node := w.node
	if node == "" {
		node = nodeA
	}
	cb := cluster.NewBuilder(node, nil)
	for _, n := range worldNodes() {
		cb.Set(n)
	}
	for _, s := range w.services {
		cb.Set(s)
	}
	for _, es := range w.slices {
		cb.Set(es)
	}
	if w.live != nil {
		cb.SetLiveNodes(w.live)
	}
	return cb
}

func worldNodes() []*corev1.Node {
	return []*corev1.Node{
		{ObjectMeta: metav1.ObjectMeta{Name: nodeA, Labels: map[string]string{labelZone: "z1"}},
			Spec: corev1.NodeSpec{PodCIDRs: []string{"198.18.1.0/24", "2001:db8:1:1::/64"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: nodeB, Labels: map[string]string{labelZone: "z2"}},
			Spec: corev1.NodeSpec{PodCIDRs: []string{"198.18.2.0/24", "2001:db8:1:2::/64"}}},
	}
}

// svc returns a ClusterIP Service ns/name with one TCP port "http" 80 -> 8080.
func svc(name, clusterIP string, mods ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeClusterIP,
			ClusterIP:  clusterIP,
			ClusterIPs: []string{clusterIP},
			Ports:      []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	for _, m := range mods {
		m(s)
	}
	return s
}

func nodePort(port int32) func(*corev1.Service) {
	return func(s *corev1.Service) {
		if s.Spec.Type == corev1.ServiceTypeClusterIP {
			s.Spec.Type = corev1.ServiceTypeNodePort
		}
		s.Spec.Ports[0].NodePort = port
	}
}

func loadBalancer(ip string) func(*corev1.Service) {
	return func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
		s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
	}
}

func etpLocal(hc int32) func(*corev1.Service) {
	return func(s *corev1.Service) {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		s.Spec.HealthCheckNodePort = hc
	}
}

type epOpt func(*discoveryv1.Endpoint)

func notReady(terminating, serving bool) epOpt {
	return func(e *discoveryv1.Endpoint) {
		f := false
		e.Conditions = discoveryv1.EndpointConditions{Ready: &f, Serving: &serving, Terminating: &terminating}
	}
}

func hints(zones ...string) epOpt {
	return func(e *discoveryv1.Endpoint) {
		e.Hints = &discoveryv1.EndpointHints{}
		for _, z := range zones {
			e.Hints.ForZones = append(e.Hints.ForZones, discoveryv1.ForZone{Name: z})
		}
	}
}

func ep(addr, node string, opts ...epOpt) discoveryv1.Endpoint {
	e := discoveryv1.Endpoint{Addresses: []string{addr}, NodeName: &node}
	for _, o := range opts {
		o(&e)
	}
	return e
}

func port(name string, proto corev1.Protocol, n int32) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: &name, Protocol: &proto, Port: &n}
}

// slice returns an EndpointSlice of service name with the given ports (default http/TCP/8080).
func slice(service, sliceName string, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	if ports == nil {
		ports = []discoveryv1.EndpointPort{port("http", corev1.ProtocolTCP, 8080)}
	}
	at := discoveryv1.AddressTypeIPv4
	if len(eps) > 0 && strings.Contains(eps[0].Addresses[0], ":") {
		at = discoveryv1.AddressTypeIPv6
	}
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: sliceName, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: at, Ports: ports, Endpoints: eps,
	}
}

// program applies d to a fresh fake with a full sync and returns it.
func program(t *testing.T, d *Desired) *knftables.Fake {
	t.Helper()
	fake := knftables.NewFake("", "")
	tx := fake.NewTransaction()
	fullTransaction(tx, d, nil)
	if err := fake.Run(context.Background(), tx); err != nil {
		t.Fatalf("applying the desired ruleset: %v", err)
	}
	return fake
}

// traceWorld builds w for node-a and returns a tracer with node-a's addresses local.
func traceWorld(t *testing.T, w *world, opts Options) (*tracer, *Desired) {
	t.Helper()
	d := Build(w.snapshot(), opts)
	return newTracer(t, program(t, d), "192.0.2.11", "127.0.0.1", "2001:db8:0:1::11", "::1"), d
}

type netipAddr = netip.Addr

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func fmtInt(i int) string { return strconv.Itoa(i) }
