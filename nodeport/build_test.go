package nodeport

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
)

// want is what a packet-trace case expects.
type want struct {
	endpoints []string
	masq      bool
	verdict   string // accept unless set
}

type traceCase struct {
	name            string
	src, dst, proto string
	port            int
	fromNode        bool
	want            want
}

func runTraces(t *testing.T, tr *tracer, cases []traceCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr.t = t
			proto := c.proto
			if proto == "" {
				proto = "tcp"
			}
			got := tr.trace(c.src, c.dst, proto, c.port, c.fromNode)
			verdict := c.want.verdict
			if verdict == "" {
				verdict = "accept"
			}
			if !slices.Equal(got.Endpoints, c.want.endpoints) || got.Masquerade != c.want.masq || got.Verdict != verdict {
				t.Errorf("%s %s -> %s:%d: got endpoints %v masquerade %v verdict %s; want %v %v %s",
					proto, c.src, c.dst, c.port, got.Endpoints, got.Masquerade, got.Verdict, c.want.endpoints, c.want.masq, verdict)
			}
		})
	}
}

var twoEndpoints = []string{"198.18.1.10:8080", "198.18.2.10:8080"}

func twoNodeSlice(name string) *discoveryv1.EndpointSlice {
	return slice(name, name+"-1", nil, ep("198.18.1.10", nodeA), ep("198.18.2.10", nodeB))
}

func TestTraceFrontends(t *testing.T) {
	ipModeProxy := corev1.LoadBalancerIPModeProxy
	w := &world{
		services: []*corev1.Service{
			svc("web", "198.19.0.10", nodePort(30080), func(s *corev1.Service) { s.Spec.ExternalIPs = []string{"198.51.100.10"} }),
			svc("lb", "198.19.0.11", nodePort(30081), loadBalancer("203.0.113.10")),
			svc("proxied", "198.19.0.12", nodePort(30082), loadBalancer("203.0.113.12"), func(s *corev1.Service) {
				s.Status.LoadBalancer.Ingress[0].IPMode = &ipModeProxy
			}),
		},
		slices: []*discoveryv1.EndpointSlice{twoNodeSlice("web"), twoNodeSlice("lb"), twoNodeSlice("proxied")},
	}
	tr, _ := traceWorld(t, w, testOpts)
	runTraces(t, tr, []traceCase{
		{name: "cluster IP from a pod is not masqueraded", src: "198.18.1.5", dst: "198.19.0.10", port: 80, want: want{endpoints: twoEndpoints}},
		{name: "cluster IP from the node is masqueraded", src: "192.0.2.11", dst: "198.19.0.10", port: 80, fromNode: true, want: want{endpoints: twoEndpoints, masq: true}},
		{name: "cluster IP from outside is masqueraded", src: "192.0.2.101", dst: "198.19.0.10", port: 80, want: want{endpoints: twoEndpoints, masq: true}},
		{name: "wrong port is left alone", src: "198.18.1.5", dst: "198.19.0.10", port: 81, want: want{}},
		{name: "nodeport on the node address", src: "192.0.2.101", dst: "192.0.2.11", port: 30080, want: want{endpoints: twoEndpoints, masq: true}},
		{name: "nodeport from the node itself", src: "192.0.2.11", dst: "192.0.2.11", port: 30080, fromNode: true, want: want{endpoints: twoEndpoints, masq: true}},
		{name: "nodeport not on loopback", src: "127.0.0.1", dst: "127.0.0.1", port: 30080, fromNode: true, want: want{}},
		{name: "nodeport to another host is not ours", src: "192.0.2.101", dst: "192.0.2.12", port: 30080, want: want{}},
		{name: "external IP", src: "192.0.2.101", dst: "198.51.100.10", port: 80, want: want{endpoints: twoEndpoints, masq: true}},
		{name: "load balancer IP", src: "192.0.2.101", dst: "203.0.113.10", port: 80, want: want{endpoints: twoEndpoints, masq: true}},
		{name: "load balancer IP with ipMode Proxy is not captured", src: "192.0.2.101", dst: "203.0.113.12", port: 80, want: want{}},
		{name: "its nodeport still works", src: "192.0.2.101", dst: "192.0.2.11", port: 30082, want: want{endpoints: twoEndpoints, masq: true}},
	})
}

func TestTraceRestrictedNodePortAddresses(t *testing.T) {
	w := &world{services: []*corev1.Service{svc("web", "198.19.0.10", nodePort(30080))}, slices: []*discoveryv1.EndpointSlice{twoNodeSlice("web")}}
	opts := testOpts
	opts.RestrictNodePorts = true
	opts.NodePortAddresses = []netipAddr{mustAddr("192.0.2.11")}
	d := Build(w.snapshot(), opts)
	tr := newTracer(t, program(t, d), "192.0.2.11", "198.51.100.99")
	runTraces(t, tr, []traceCase{
		{name: "listed address", src: "192.0.2.101", dst: "192.0.2.11", port: 30080, want: want{endpoints: twoEndpoints, masq: true}},
		{name: "other local address", src: "192.0.2.101", dst: "198.51.100.99", port: 30080, want: want{}},
	})
}

func TestTraceProtocolsAndNamedPorts(t *testing.T) {
	multi := svc("dns", "198.19.0.53", func(s *corev1.Service) {
		s.Spec.Ports = []corev1.ServicePort{
			{Name: "dns-udp", Port: 53, Protocol: corev1.ProtocolUDP},
			{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP},
			{Name: "sig", Port: 9000, Protocol: corev1.ProtocolSCTP},
		}
	})
	ports := []discoveryv1.EndpointPort{port("dns-udp", corev1.ProtocolUDP, 5353), port("dns-tcp", corev1.ProtocolTCP, 5354), port("sig", corev1.ProtocolSCTP, 9001)}
	// The named port "http" is 8080 on one slice's pods and 9090 on the other's.
	w := &world{
		services: []*corev1.Service{multi, svc("named", "198.19.0.20")},
		slices: []*discoveryv1.EndpointSlice{
			slice("dns", "dns-1", ports, ep("198.18.1.53", nodeA)),
			slice("named", "named-1", nil, ep("198.18.1.20", nodeA)),
			slice("named", "named-2", []discoveryv1.EndpointPort{port("http", corev1.ProtocolTCP, 9090)}, ep("198.18.2.20", nodeB)),
		},
	}
	tr, _ := traceWorld(t, w, testOpts)
	runTraces(t, tr, []traceCase{
		{name: "udp", src: "198.18.1.5", dst: "198.19.0.53", proto: "udp", port: 53, want: want{endpoints: []string{"198.18.1.53:5353"}}},
		{name: "tcp on the same port number", src: "198.18.1.5", dst: "198.19.0.53", proto: "tcp", port: 53, want: want{endpoints: []string{"198.18.1.53:5354"}}},
		{name: "sctp", src: "198.18.1.5", dst: "198.19.0.53", proto: "sctp", port: 9000, want: want{endpoints: []string{"198.18.1.53:9001"}}},
		{name: "sctp port not served over tcp", src: "198.18.1.5", dst: "198.19.0.53", proto: "tcp", port: 9000, want: want{}},
		{name: "named port per endpoint", src: "198.18.1.5", dst: "198.19.0.20", port: 80, want: want{endpoints: []string{"198.18.1.20:8080", "198.18.2.20:9090"}}},
	})
}

func TestTraceSessionAffinity(t *testing.T) {
	timeout := int32(30)
	w := &world{
		services: []*corev1.Service{svc("sticky", "198.19.0.30", func(s *corev1.Service) {
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: &timeout}}
		})},
		slices: []*discoveryv1.EndpointSlice{twoNodeSlice("sticky")},
	}
	tr, d := traceWorld(t, w, testOpts)
	first := tr.trace("198.18.1.5", "198.19.0.30", "tcp", 80, false)
	if !slices.Equal(first.Endpoints, twoEndpoints) || len(first.Updates) != 1 {
		t.Fatalf("first connection: endpoints %v updates %v; want both endpoints and one affinity entry", first.Endpoints, first.Updates)
	}
	tr.learn(first)
	again := tr.trace("198.18.1.5", "198.19.0.30", "tcp", 80, false)
	if len(again.Endpoints) != 1 {
		t.Fatalf("second connection from the same client may reach %v; want the one endpoint it was pinned to", again.Endpoints)
	}
	other := tr.trace("198.18.1.6", "198.19.0.30", "tcp", 80, false)
	if !slices.Equal(other.Endpoints, twoEndpoints) {
		t.Errorf("another client may reach %v; want both", other.Endpoints)
	}
	n := 0
	for _, s := range d.Tables()[0].Sets {
		if s.Timeout != nil {
			n++
			if s.Timeout.Seconds() != 30 {
				t.Errorf("affinity set %s has timeout %s; want 30s", s.Name, s.Timeout)
			}
		}
	}
	if n != 2 {
		t.Errorf("got %d affinity sets; want one per endpoint", n)
	}
}

func TestTraceTrafficPolicies(t *testing.T) {
	itpLocal := corev1.ServiceInternalTrafficPolicyLocal
	w := &world{
		services: []*corev1.Service{
			svc("local", "198.19.0.40", nodePort(30040), loadBalancer("203.0.113.40"), etpLocal(32040)),
			svc("remote", "198.19.0.41", nodePort(30041), etpLocal(0)),
			svc("internal", "198.19.0.42", func(s *corev1.Service) { s.Spec.InternalTrafficPolicy = &itpLocal }),
			svc("internal-remote", "198.19.0.43", func(s *corev1.Service) { s.Spec.InternalTrafficPolicy = &itpLocal }),
		},
		slices: []*discoveryv1.EndpointSlice{
			twoNodeSlice("local"),
			slice("remote", "remote-1", nil, ep("198.18.2.41", nodeB)),
			twoNodeSlice("internal"),
			slice("internal-remote", "ir-1", nil, ep("198.18.2.43", nodeB)),
		},
	}
	tr, d := traceWorld(t, w, testOpts)
	runTraces(t, tr, []traceCase{
		{name: "etp local keeps the client address and goes local", src: "192.0.2.101", dst: "192.0.2.11", port: 30040, want: want{endpoints: []string{"198.18.1.10:8080"}}},
		{name: "etp local on the lb IP", src: "192.0.2.101", dst: "203.0.113.40", port: 80, want: want{endpoints: []string{"198.18.1.10:8080"}}},
		{name: "etp local cluster IP still reaches all", src: "198.18.1.5", dst: "198.19.0.40", port: 80, want: want{endpoints: twoEndpoints}},
		{name: "etp local without local endpoints drops", src: "192.0.2.101", dst: "192.0.2.11", port: 30041, want: want{verdict: "drop"}},
		{name: "etp local from a pod short-circuits", src: "198.18.1.5", dst: "192.0.2.11", port: 30041, want: want{endpoints: []string{"198.18.2.41:8080"}}},
		{name: "etp local from the node short-circuits", src: "192.0.2.11", dst: "192.0.2.11", port: 30041, fromNode: true, want: want{endpoints: []string{"198.18.2.41:8080"}, masq: true}},
		{name: "itp local goes local", src: "198.18.1.5", dst: "198.19.0.42", port: 80, want: want{endpoints: []string{"198.18.1.10:8080"}}},
		{name: "itp local without local endpoints drops", src: "198.18.1.5", dst: "198.19.0.43", port: 80, want: want{verdict: "drop"}},
	})
	hc, ok := d.HealthChecks[32040]
	if !ok || hc.LocalEndpoints != 1 || hc.Service != (types.NamespacedName{Namespace: "ns", Name: "local"}) {
		t.Errorf("health check 32040 = %+v, %v; want ns/local with 1 local endpoint", hc, ok)
	}
}

func TestTraceEndpointSelection(t *testing.T) {
	w := &world{
		services: []*corev1.Service{
			svc("mixed", "198.19.0.50"), svc("terminating", "198.19.0.51"), svc("gone", "198.19.0.52"),
			svc("hinted", "198.19.0.53"), svc("partly-hinted", "198.19.0.54"), svc("none", "198.19.0.55", nodePort(30055)),
		},
		slices: []*discoveryv1.EndpointSlice{
			slice("mixed", "m", nil, ep("198.18.1.50", nodeA), ep("198.18.2.50", nodeB, notReady(true, true))),
			slice("terminating", "t", nil, ep("198.18.1.51", nodeA, notReady(true, true)), ep("198.18.2.51", nodeB, notReady(true, false))),
			slice("gone", "g", nil, ep("198.18.1.52", nodeA, notReady(false, false))),
			slice("hinted", "h", nil, ep("198.18.1.53", nodeA, hints("z1")), ep("198.18.2.53", nodeB, hints("z2"))),
			slice("partly-hinted", "p", nil, ep("198.18.1.54", nodeA, hints("z1")), ep("198.18.2.54", nodeB)),
		},
	}
	tr, _ := traceWorld(t, w, testOpts)
	runTraces(t, tr, []traceCase{
		{name: "ready before terminating", src: "198.18.1.5", dst: "198.19.0.50", port: 80, want: want{endpoints: []string{"198.18.1.50:8080"}}},
		{name: "serving terminating when none ready", src: "198.18.1.5", dst: "198.19.0.51", port: 80, want: want{endpoints: []string{"198.18.1.51:8080"}}},
		{name: "not serving means none: reject", src: "198.18.1.5", dst: "198.19.0.52", port: 80, want: want{verdict: "reject"}},
		{name: "topology hints for this zone", src: "198.18.1.5", dst: "198.19.0.53", port: 80, want: want{endpoints: []string{"198.18.1.53:8080"}}},
		{name: "hints ignored unless all have them", src: "198.18.1.5", dst: "198.19.0.54", port: 80, want: want{endpoints: []string{"198.18.1.54:8080", "198.18.2.54:8080"}}},
		{name: "no endpoints rejects from a pod", src: "198.18.1.5", dst: "198.19.0.55", port: 80, want: want{verdict: "reject"}},
		{name: "no endpoints rejects from the node", src: "192.0.2.11", dst: "198.19.0.55", port: 80, fromNode: true, want: want{verdict: "reject"}},
		{name: "no endpoints rejects on the nodeport", src: "192.0.2.101", dst: "192.0.2.11", port: 30055, want: want{verdict: "reject"}},
	})
}

func TestTraceDeadNodes(t *testing.T) {
	w := &world{
		services: []*corev1.Service{svc("dead", "198.19.0.56"), svc("all-dead", "198.19.0.57")},
		slices: []*discoveryv1.EndpointSlice{
			slice("dead", "d", nil, ep("198.18.1.56", nodeA), ep("198.18.2.56", nodeB)),
			slice("all-dead", "ad", nil, ep("198.18.2.57", nodeB)),
		},
		live: map[string]bool{nodeA: true},
	}
	tr, _ := traceWorld(t, w, testOpts)
	runTraces(t, tr, []traceCase{
		{name: "endpoints on dead nodes left out", src: "198.18.1.5", dst: "198.19.0.56", port: 80, want: want{endpoints: []string{"198.18.1.56:8080"}}},
		{name: "but used when nothing else is left", src: "198.18.1.5", dst: "198.19.0.57", port: 80, want: want{endpoints: []string{"198.18.2.57:8080"}}},
	})
}

func TestTraceSourceRangesAndHairpin(t *testing.T) {
	w := &world{
		services: []*corev1.Service{
			svc("fw", "198.19.0.60", nodePort(30060), loadBalancer("203.0.113.60"), func(s *corev1.Service) {
				s.Spec.LoadBalancerSourceRanges = []string{"192.0.2.96/28", "2001:db8::/32"}
			}),
			svc("self", "198.19.0.61"),
		},
		slices: []*discoveryv1.EndpointSlice{twoNodeSlice("fw"), slice("self", "s", nil, ep("198.18.1.61", nodeA))},
	}
	tr, _ := traceWorld(t, w, testOpts)
	runTraces(t, tr, []traceCase{
		{name: "allowed source", src: "192.0.2.101", dst: "203.0.113.60", port: 80, want: want{endpoints: twoEndpoints, masq: true}},
		{name: "other source dropped", src: "192.0.2.115", dst: "203.0.113.60", port: 80, want: want{verdict: "drop"}},
		{name: "ranges do not guard the nodeport", src: "192.0.2.115", dst: "192.0.2.11", port: 30060, want: want{endpoints: twoEndpoints, masq: true}},
		{name: "hairpin is masqueraded", src: "198.18.1.61", dst: "198.19.0.61", port: 80, want: want{endpoints: []string{"198.18.1.61:8080"}, masq: true}},
		{name: "other pod is not", src: "198.18.1.62", dst: "198.19.0.61", port: 80, want: want{endpoints: []string{"198.18.1.61:8080"}}},
	})
}

func TestIgnoredServices(t *testing.T) {
	headless := svc("headless", corev1.ClusterIPNone)
	external := svc("external", "", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeExternalName
		s.Spec.ExternalName = "example.com"
	})
	other := svc("other-proxy", "198.19.0.70", func(s *corev1.Service) { s.Labels = map[string]string{labelServiceProxyName: "someone-else"} })
	w := &world{
		services: []*corev1.Service{headless, external, other},
		slices:   []*discoveryv1.EndpointSlice{twoNodeSlice("headless"), twoNodeSlice("other-proxy")},
	}
	tr, d := traceWorld(t, w, testOpts)
	if d.Services != 0 || d.ElementCount() != 4 { // the v4 and v6 pod CIDRs of node-a and node-b
		t.Errorf("got %d services and %d elements; want none but the pod CIDRs", d.Services, d.ElementCount())
	}
	runTraces(t, tr, []traceCase{
		{name: "service-proxy-name left alone", src: "198.18.1.5", dst: "198.19.0.70", port: 80, want: want{}},
	})
}

func TestTraceDualStack(t *testing.T) {
	ds := svc("ds", "198.19.0.80", nodePort(30080), func(s *corev1.Service) {
		s.Spec.ClusterIPs = []string{"198.19.0.80", "2001:db8:2::80"}
	})
	v6only := svc("v6", "2001:db8:2::81")
	w := &world{
		services: []*corev1.Service{ds, v6only},
		slices: []*discoveryv1.EndpointSlice{
			twoNodeSlice("ds"),
			slice("ds", "ds-v6", nil, ep("2001:db8:1:1::10", nodeA), ep("2001:db8:1:2::10", nodeB)),
			slice("v6", "v6", nil, ep("2001:db8:1:2::11", nodeB)),
		},
	}
	tr, _ := traceWorld(t, w, testOpts)
	v6eps := []string{"[2001:db8:1:1::10]:8080", "[2001:db8:1:2::10]:8080"}
	runTraces(t, tr, []traceCase{
		{name: "v4 cluster IP", src: "198.18.1.5", dst: "198.19.0.80", port: 80, want: want{endpoints: twoEndpoints}},
		{name: "v6 cluster IP", src: "2001:db8:1:1::5", dst: "2001:db8:2::80", port: 80, want: want{endpoints: v6eps}},
		{name: "v6 cluster IP from outside masqueraded", src: "2001:db8:0:1::101", dst: "2001:db8:2::80", port: 80, want: want{endpoints: v6eps, masq: true}},
		{name: "v6 nodeport", src: "2001:db8:0:1::101", dst: "2001:db8:0:1::11", port: 30080, want: want{endpoints: v6eps, masq: true}},
		{name: "single-stack v6", src: "2001:db8:1:1::5", dst: "2001:db8:2::81", port: 80, want: want{endpoints: []string{"[2001:db8:1:2::11]:8080"}}},
	})
}
