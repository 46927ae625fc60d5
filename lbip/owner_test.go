package lbip

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/baregate/baregate/internal/cluster"
	"github.com/baregate/baregate/lbip/allocator"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func node(name string, labels ...string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}}}
	for i := 0; i+1 < len(labels); i += 2 {
		n.Labels[labels[i]] = labels[i+1]
	}
	return n
}

func pool(name string, addrs ...string) *metallbv1beta1.IPAddressPool {
	return &metallbv1beta1.IPAddressPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: "baregate", Name: name, Labels: map[string]string{"pool": name}},
		Spec:       metallbv1beta1.IPAddressPoolSpec{Addresses: addrs},
	}
}

func l2adv(name string, spec metallbv1beta1.L2AdvertisementSpec) *metallbv1beta1.L2Advertisement {
	return &metallbv1beta1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Namespace: "baregate", Name: name}, Spec: spec}
}

func lbService(name string, etpLocal bool, ips ...string) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyCluster},
	}
	if etpLocal {
		svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}
	for _, ip := range ips {
		svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
	}
	return svc
}

// slice gives svc one endpoint per node in nodes, ready unless listed in notReady.
func slice(svc string, nodes []string, notReady ...string) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: svc + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for i, n := range nodes {
		ready := true
		for _, nr := range notReady {
			ready = ready && nr != n
		}
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{fmt.Sprintf("198.18.%d.10", i)},
			NodeName:   &n,
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
		})
	}
	return es
}

func TestAssign(t *testing.T) {
	three := []*corev1.Node{node("n1", "zone", "a"), node("n2", "zone", "b"), node("n3", "zone", "b")}
	allLive := map[string]bool{"n1": true, "n2": true, "n3": true}
	lbPool := pool("lb", "203.0.113.0/24", "2001:db8:0:2::/64")
	extPool := pool("ext", "198.51.100.10-198.51.100.20")
	extPool.Annotations = map[string]string{allocator.ExternalIPsAnnotation: "true"}
	everywhere := l2adv("all", metallbv1beta1.L2AdvertisementSpec{})
	ip := netip.MustParseAddr("203.0.113.7")
	// The owner among all three, so cases can check that a filter moves the IP elsewhere.
	hashOwner := pickNode([]string{"n1", "n2", "n3"}, ip)
	others := func(except ...string) []string {
		var out []string
		for _, n := range []string{"n1", "n2", "n3"} {
			keep := true
			for _, e := range except {
				keep = keep && e != n
			}
			if keep {
				out = append(out, n)
			}
		}
		return out
	}
	ext := lbService("ext", false)
	ext.Spec.Type = corev1.ServiceTypeClusterIP
	ext.Spec.ExternalIPs = []string{"198.51.100.15", "198.51.100.99"}
	otherClass := lbService("other", false, "203.0.113.7")
	class := "example.com/lb"
	otherClass.Spec.LoadBalancerClass = &class

	cases := []struct {
		name   string
		in     cluster.Inputs
		live   map[string]bool
		want   map[string]string // ip -> node ("" = not announced)
		wantIf map[string][]string
	}{{
		name: "all live: hash owner",
		in: cluster.Inputs{Nodes: three, Pools: []*metallbv1beta1.IPAddressPool{lbPool},
			L2Advertisements: []*metallbv1beta1.L2Advertisement{everywhere},
			Services:         []*corev1.Service{lbService("a", false, "203.0.113.7")}},
		live: allLive,
		want: map[string]string{"203.0.113.7": hashOwner},
	}, {
		name: "no gossip view: every node counts as live",
		in: cluster.Inputs{Nodes: three, Pools: []*metallbv1beta1.IPAddressPool{lbPool},
			L2Advertisements: []*metallbv1beta1.L2Advertisement{everywhere},
			Services:         []*corev1.Service{lbService("a", false, "203.0.113.7")}},
		want: map[string]string{"203.0.113.7": hashOwner},
	}, {
		name: "owner lost from gossip: next by hash",
		in: cluster.Inputs{Nodes: three, Pools: []*metallbv1beta1.IPAddressPool{lbPool},
			L2Advertisements: []*metallbv1beta1.L2Advertisement{everywhere},
			Services:         []*corev1.Service{lbService("a", false, "203.0.113.7")}},
		live: map[string]bool{others(hashOwner)[0]: true, others(hashOwner)[1]: true},
		want: map[string]string{"203.0.113.7": pickNode(others(hashOwner), ip)},
	}, {
		name: "excluded node never owns",
		in: cluster.Inputs{Nodes: []*corev1.Node{node(hashOwner, ExcludeFromLBLabel, ""), node(others(hashOwner)[0]), node(others(hashOwner)[1])},
			Pools: []*metallbv1beta1.IPAddressPool{lbPool}, L2Advertisements: []*metallbv1beta1.L2Advertisement{everywhere},
			Services: []*corev1.Service{lbService("a", false, "203.0.113.7")}},
		live: allLive,
		want: map[string]string{"203.0.113.7": pickNode(others(hashOwner), ip)},
	}, {
		name: "live member without a Node object is skipped",
		in: cluster.Inputs{Nodes: three[:1], Pools: []*metallbv1beta1.IPAddressPool{lbPool},
			L2Advertisements: []*metallbv1beta1.L2Advertisement{everywhere},
			Services:         []*corev1.Service{lbService("a", false, "203.0.113.7")}},
		live: allLive,
		want: map[string]string{"203.0.113.7": "n1"},
	}, {
		name: "node selector and interfaces",
		in: cluster.Inputs{Nodes: three, Pools: []*metallbv1beta1.IPAddressPool{lbPool},
			L2Advertisements: []*metallbv1beta1.L2Advertisement{l2adv("zone-a", metallbv1beta1.L2AdvertisementSpec{
				IPAddressPools: []string{"lb"}, Interfaces: []string{"eth1", "eth0"},
				NodeSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"zone": "a"}}},
			})},
			Services: []*corev1.Service{lbService("a", false, "203.0.113.7")}},
		live:   allLive,
		want:   map[string]string{"203.0.113.7": "n1"},
		wantIf: map[string][]string{"203.0.113.7": {"eth0", "eth1"}},
	}, {
		name: "an advertisement without interfaces widens to all",
		in: cluster.Inputs{Nodes: three[:1], Pools: []*metallbv1beta1.IPAddressPool{lbPool},
			L2Advertisements: []*metallbv1beta1.L2Advertisement{
				l2adv("eth0", metallbv1beta1.L2AdvertisementSpec{Interfaces: []string{"eth0"}}),
				l2adv("any", metallbv1beta1.L2AdvertisementSpec{IPAddressPools: []string{"lb"}}),
			},
			Services: []*corev1.Service{lbService("a", false, "203.0.113.7")}},
		live:   allLive,
		want:   map[string]string{"203.0.113.7": "n1"},
		wantIf: map[string][]string{"203.0.113.7": nil},
	}, {
		name: "pool selector by label; an advertisement for another pool does not count",
		in: cluster.Inputs{Nodes: three, Pools: []*metallbv1beta1.IPAddressPool{lbPool, extPool},
			L2Advertisements: []*metallbv1beta1.L2Advertisement{
				l2adv("ext", metallbv1beta1.L2AdvertisementSpec{IPAddressPools: []string{"ext"}}),
				l2adv("sel", metallbv1beta1.L2AdvertisementSpec{
					IPAddressPoolSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"pool": "lb"}}},
					NodeSelectors:          []metav1.LabelSelector{{MatchLabels: map[string]string{"zone": "b"}}},
				}),
			},
			Services: []*corev1.Service{lbService("a", false, "203.0.113.7")}},
		live: allLive,
		want: map[string]string{"203.0.113.7": pickNode([]string{"n2", "n3"}, ip)},
	}, {
		name: "no advertisement for the pool: not announced",
		in: cluster.Inputs{Nodes: three, Pools: []*metallbv1beta1.IPAddressPool{lbPool, extPool},
			L2Advertisements: []*metallbv1beta1.L2Advertisement{l2adv("ext", metallbv1beta1.L2AdvertisementSpec{IPAddressPools: []string{"ext"}})},
			Services:         []*corev1.Service{lbService("a", false, "203.0.113.7")}},
		live: allLive,
		want: map[string]string{"203.0.113.7": ""},
	}, {
		name: "IP in no pool: not announced",
		in: cluster.Inputs{Nodes: three, Pools: []*metallbv1beta1.IPAddressPool{lbPool},
			L2Advertisements: []*metallbv1beta1.L2Advertisement{everywhere},
			Services:         []*corev1.Service{lbService("a", false, "192.0.2.200")}},
		live: allLive,
		want: map[string]string{"192.0.2.200": ""},
	}, {
		name: "ETP Local goes to the node with a ready endpoint",
		in: cluster.Inputs{Nodes: three, Pools: []*metallbv1beta1.IPAddressPool{lbPool},
			L2Advertisements: []*metallbv1beta1.L2Advertisement{everywhere},
			Services:         []*corev1.Service{lbService("a", true, "203.0.113.7")},
			EndpointSlices:   []*discoveryv1.EndpointSlice{slice("a", others(hashOwner)[:1])}},
		live: allLive,
		want: map[string]string{"203.0.113.7": others(hashOwner)[0]},
	}, {
		name: "ETP Local skips a node whose endpoint is not ready",
		in: cluster.Inputs{Nodes: three, Pools: []*metallbv1beta1.IPAddressPool{lbPool},
			L2Advertisements: []*metallbv1beta1.L2Advertisement{everywhere},
			Services:         []*corev1.Service{lbService("a", true, "203.0.113.7")},
			EndpointSlices:   []*discoveryv1.EndpointSlice{slice("a", []string{"n1", "n2"}, "n1")}},
		live: allLive,
		want: map[string]string{"203.0.113.7": "n2"},
	}, {
		name: "ETP Local without endpoints: not announced",
		in: cluster.Inputs{Nodes: three, Pools: []*metallbv1beta1.IPAddressPool{lbPool},
			L2Advertisements: []*metallbv1beta1.L2Advertisement{everywhere},
			Services:         []*corev1.Service{lbService("a", true, "203.0.113.7")}},
		live: allLive,
		want: map[string]string{"203.0.113.7": ""},
	}, {
		name: "ETP Local endpoint node dead in gossip: not announced",
		in: cluster.Inputs{Nodes: three, Pools: []*metallbv1beta1.IPAddressPool{lbPool},
			L2Advertisements: []*metallbv1beta1.L2Advertisement{everywhere},
			Services:         []*corev1.Service{lbService("a", true, "203.0.113.7")},
			EndpointSlices:   []*discoveryv1.EndpointSlice{slice("a", []string{"n3"})}},
		live: map[string]bool{"n1": true, "n2": true},
		want: map[string]string{"203.0.113.7": ""},
	}, {
		name: "shared IP: Local and Cluster Services land on the Local one's node",
		in: cluster.Inputs{Nodes: three, Pools: []*metallbv1beta1.IPAddressPool{lbPool},
			L2Advertisements: []*metallbv1beta1.L2Advertisement{everywhere},
			Services:         []*corev1.Service{lbService("a", false, "203.0.113.7"), lbService("b", true, "203.0.113.7")},
			EndpointSlices:   []*discoveryv1.EndpointSlice{slice("b", others(hashOwner)[1:])}},
		live: allLive,
		want: map[string]string{"203.0.113.7": others(hashOwner)[1]},
	}, {
		name: "shared IP: two Local Services with disjoint endpoints: not announced",
		in: cluster.Inputs{Nodes: three, Pools: []*metallbv1beta1.IPAddressPool{lbPool},
			L2Advertisements: []*metallbv1beta1.L2Advertisement{everywhere},
			Services:         []*corev1.Service{lbService("a", true, "203.0.113.7"), lbService("b", true, "203.0.113.7")},
			EndpointSlices:   []*discoveryv1.EndpointSlice{slice("a", []string{"n1"}), slice("b", []string{"n2"})}},
		live: allLive,
		want: map[string]string{"203.0.113.7": ""},
	}, {
		name: "dual-stack Service: each IP on its own",
		in: cluster.Inputs{Nodes: three, Pools: []*metallbv1beta1.IPAddressPool{lbPool},
			L2Advertisements: []*metallbv1beta1.L2Advertisement{everywhere},
			Services:         []*corev1.Service{lbService("a", false, "203.0.113.7", "2001:db8:0:2::7")}},
		live: allLive,
		want: map[string]string{"203.0.113.7": hashOwner, "2001:db8:0:2::7": pickNode([]string{"n1", "n2", "n3"}, netip.MustParseAddr("2001:db8:0:2::7"))},
	}, {
		name: "externalIPs only from pools marked for them; other classes ignored",
		in: cluster.Inputs{Nodes: three[:1], Pools: []*metallbv1beta1.IPAddressPool{lbPool, extPool},
			L2Advertisements: []*metallbv1beta1.L2Advertisement{everywhere},
			Services:         []*corev1.Service{ext, otherClass}},
		live: allLive,
		want: map[string]string{"198.51.100.15": "n1"},
	}, {
		name: "a pool the allocator refuses keeps announcing what it gave",
		in: cluster.Inputs{Nodes: three[:1], Pools: []*metallbv1beta1.IPAddressPool{pool("broken", "203.0.113.0/24", "not-an-address")},
			L2Advertisements: []*metallbv1beta1.L2Advertisement{everywhere},
			Services:         []*corev1.Service{lbService("a", false, "203.0.113.7")}},
		live: allLive,
		want: map[string]string{"203.0.113.7": "n1"},
	}, {
		name: "nobody live",
		in: cluster.Inputs{Nodes: three, Pools: []*metallbv1beta1.IPAddressPool{lbPool},
			L2Advertisements: []*metallbv1beta1.L2Advertisement{everywhere},
			Services:         []*corev1.Service{lbService("a", false, "203.0.113.7")}},
		live: map[string]bool{},
		want: map[string]string{"203.0.113.7": ""},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			snap := cluster.NewSnapshot(1, time.Unix(0, 0), tc.in)
			got := Assign(snap, tc.live)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d assignments %+v, want %d", len(got), got, len(tc.want))
			}
			for _, a := range got {
				want, ok := tc.want[a.IP.String()]
				if !ok {
					t.Errorf("unexpected assignment %+v", a)
					continue
				}
				if a.Node != want {
					t.Errorf("%s: owner %q (why %q), want %q", a.IP, a.Node, a.Why, want)
				}
				if (a.Node == "") != (a.Why != "") {
					t.Errorf("%s: owner %q with why %q", a.IP, a.Node, a.Why)
				}
				if wantIf, ok := tc.wantIf[a.IP.String()]; ok && fmt.Sprint(a.Interfaces) != fmt.Sprint(wantIf) {
					t.Errorf("%s: interfaces %q, want %q", a.IP, a.Interfaces, wantIf)
				}
			}
			owners := Owners(snap, tc.live)
			for ipStr, want := range tc.want {
				if got := owners[netip.MustParseAddr(ipStr)]; got != want {
					t.Errorf("Owners[%s] = %q, want %q", ipStr, got, want)
				}
			}
		})
	}
}

func TestAssignSharedServicesListed(t *testing.T) {
	snap := cluster.NewSnapshot(1, time.Unix(0, 0), cluster.Inputs{
		Nodes: []*corev1.Node{node("n1")}, Pools: []*metallbv1beta1.IPAddressPool{pool("lb", "203.0.113.0/24")},
		L2Advertisements: []*metallbv1beta1.L2Advertisement{l2adv("all", metallbv1beta1.L2AdvertisementSpec{})},
		Services:         []*corev1.Service{lbService("b", false, "203.0.113.7"), lbService("a", false, "203.0.113.7")},
	})
	got := Assign(snap, nil)
	if len(got) != 1 || fmt.Sprint(got[0].Services) != "[default/a default/b]" || got[0].Pool != "lb" {
		t.Fatalf("got %+v, want one assignment for default/a and default/b from pool lb", got)
	}
}

// TestPickNodeStable checks the property the hash is chosen for: nodes joining or leaving move only
// the IPs they win or held, and ownership spreads over the nodes.
func TestPickNodeStable(t *testing.T) {
	nodes := []string{"n1", "n2", "n3", "n4", "n5"}
	count := map[string]int{}
	moved := 0
	for i := range 250 {
		ip := netip.AddrFrom4([4]byte{203, 0, 113, byte(i)})
		before := pickNode(nodes, ip)
		count[before]++
		after := pickNode(nodes[:4], ip) // n5 leaves
		if before != "n5" && after != before {
			t.Errorf("%s moved from %s to %s though its owner stayed", ip, before, after)
		}
		if before == "n5" {
			moved++
		}
	}
	for _, n := range nodes {
		if count[n] < 20 {
			t.Errorf("node %s owns %d of 250 IPs; the hash does not spread (%v)", n, count[n], count)
		}
	}
	if moved == 0 {
		t.Errorf("n5 owned nothing, the leave case was not exercised")
	}
}
