package allocator

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

const (
	sharedKey  = AnnotationAllowSharedIP
	lbIPs      = AnnotationLoadBalancerIPs
	addrPool   = AnnotationAddressPool
	dual       = corev1.IPFamilyPolicyRequireDualStack
	preferDual = corev1.IPFamilyPolicyPreferDualStack
	single     = corev1.IPFamilyPolicySingleStack
	fam4       = corev1.IPv4Protocol
	fam6       = corev1.IPv6Protocol
)

func TestAllocate(t *testing.T) {
	two := []*metallbv1beta1.IPAddressPool{mkPool("a", []string{"203.0.113.10-203.0.113.11"})}
	both := []*metallbv1beta1.IPAddressPool{mkPool("a", []string{"203.0.113.10/31", "2001:db8:0:2::/64"})}
	type tc struct {
		name  string
		pools []*metallbv1beta1.IPAddressPool
		svcs  []*corev1.Service
		nss   []*corev1.Namespace
		want  []string
	}
	for _, c := range []tc{
		{name: "lowest free address, oldest first", pools: two,
			svcs: []*corev1.Service{mkSvc("ns", "b", 1), mkSvc("ns", "a", 2)},
			want: []string{"ns/a=203.0.113.11", "ns/b=203.0.113.10"}},
		{name: "status is kept even by a newer Service", pools: two,
			svcs: []*corev1.Service{mkSvc("ns", "old", 1), mkSvc("ns", "new", 2, withStatus("203.0.113.10"))},
			want: []string{"ns/new=203.0.113.10", "ns/old=203.0.113.11"}},
		{name: "two holders of one address: the older keeps it", pools: two,
			svcs: []*corev1.Service{mkSvc("ns", "x", 5, withStatus("203.0.113.10")), mkSvc("ns", "y", 1, withStatus("203.0.113.10"))},
			want: []string{"ns/x=203.0.113.11", "ns/y=203.0.113.10"}},
		{name: "exhausted", pools: two,
			svcs: []*corev1.Service{mkSvc("ns", "a", 1), mkSvc("ns", "b", 2), mkSvc("ns", "c", 3)},
			want: []string{"ns/a=203.0.113.10", "ns/b=203.0.113.11", "ns/c!PoolExhausted"}},
		{name: "no pools", svcs: []*corev1.Service{mkSvc("ns", "a", 1, withStatus("203.0.113.10"))},
			want: []string{"ns/a!NoPool"}},
		{name: "spec.loadBalancerIP", pools: two,
			svcs: []*corev1.Service{mkSvc("ns", "a", 1), mkSvc("ns", "b", 2, withLBIP("203.0.113.10"))},
			want: []string{"ns/a=203.0.113.11", "ns/b=203.0.113.10"}},
		{name: "requested address moves the Service", pools: two,
			svcs: []*corev1.Service{mkSvc("ns", "a", 1, withStatus("203.0.113.10"), withAnn(lbIPs, "203.0.113.11"))},
			want: []string{"ns/a=203.0.113.11"}},
		{name: "requested address taken by a holder", pools: two,
			svcs: []*corev1.Service{mkSvc("ns", "a", 2, withStatus("203.0.113.10")), mkSvc("ns", "b", 1, withLBIP("203.0.113.10"))},
			want: []string{"ns/a=203.0.113.10", "ns/b!IPTaken"}},
		{name: "requested address out of pool", pools: two,
			svcs: []*corev1.Service{mkSvc("ns", "a", 1, withLBIP("198.51.100.1"))},
			want: []string{"ns/a!IPNotInPool"}},
		{name: "bad annotation keeps what the Service holds", pools: two,
			svcs: []*corev1.Service{mkSvc("ns", "a", 1, withStatus("203.0.113.11"), withAnn(lbIPs, "203.0.113.300")), mkSvc("ns", "b", 2, withAnn(lbIPs, "nope"))},
			want: []string{"ns/a!BadAnnotation=203.0.113.11", "ns/b!BadAnnotation"}},
		{name: "loadBalancerIP and annotation together", pools: two,
			svcs: []*corev1.Service{mkSvc("ns", "a", 1, withLBIP("203.0.113.10"), withAnn(lbIPs, "203.0.113.10"))},
			want: []string{"ns/a!BadAnnotation"}},
		{name: "requested family not the Service's", pools: both,
			svcs: []*corev1.Service{mkSvc("ns", "a", 1, withAnn(lbIPs, "2001:db8:0:2::5"))},
			want: []string{"ns/a!BadAnnotation"}},
		{name: "deprecated annotation prefix", pools: two,
			svcs: []*corev1.Service{mkSvc("ns", "a", 1, withAnn("metallb.universe.tf/loadBalancerIPs", "203.0.113.11"))},
			want: []string{"ns/a=203.0.113.11"}},
		{name: "address-pool picks a pool without autoAssign",
			pools: []*metallbv1beta1.IPAddressPool{mkPool("a", []string{"203.0.113.10/32"}), mkPool("z", []string{"203.0.113.20/32"}, noAuto)},
			svcs:  []*corev1.Service{mkSvc("ns", "a", 1, withAnn(addrPool, "z")), mkSvc("ns", "b", 2), mkSvc("ns", "c", 3)},
			want:  []string{"ns/a=203.0.113.20", "ns/b=203.0.113.10", "ns/c!PoolExhausted"}},
		{name: "address-pool change moves the Service",
			pools: []*metallbv1beta1.IPAddressPool{mkPool("a", []string{"203.0.113.10/32"}), mkPool("z", []string{"203.0.113.20/32"}, noAuto)},
			svcs:  []*corev1.Service{mkSvc("ns", "a", 1, withStatus("203.0.113.10"), withAnn(addrPool, "z"))},
			want:  []string{"ns/a=203.0.113.20"}},
		{name: "unknown pool", pools: two,
			svcs: []*corev1.Service{mkSvc("ns", "a", 1, withAnn(addrPool, "nope"))},
			want: []string{"ns/a!UnknownPool"}},
		{name: "requested IP outside the requested pool",
			pools: []*metallbv1beta1.IPAddressPool{mkPool("a", []string{"203.0.113.10/32"}), mkPool("z", []string{"203.0.113.20/32"})},
			svcs:  []*corev1.Service{mkSvc("ns", "a", 1, withAnn(addrPool, "z"), withLBIP("203.0.113.10"))},
			want:  []string{"ns/a!IPNotInPool"}},
		{name: "sharing: same key, other ports", pools: two,
			svcs: []*corev1.Service{
				mkSvc("ns", "a", 1, withAnn(sharedKey, "k"), withPorts(80)),
				mkSvc("ns", "b", 2, withAnn(sharedKey, "k"), withPorts(443)),
				mkSvc("ns", "c", 3, withAnn(sharedKey, "k"), withPorts(80)),
			},
			want: []string{"ns/a=203.0.113.10", "ns/b=203.0.113.10", "ns/c=203.0.113.11"}},
		{name: "sharing needs the key on both", pools: two,
			svcs: []*corev1.Service{mkSvc("ns", "a", 1, withPorts(80), withStatus("203.0.113.10")), mkSvc("ns", "b", 2, withAnn(sharedKey, "k"), withPorts(443), withLBIP("203.0.113.10"))},
			want: []string{"ns/a=203.0.113.10", "ns/b!IPTaken"}},
		{name: "sharing with a different key", pools: two,
			svcs: []*corev1.Service{mkSvc("ns", "a", 1, withAnn(sharedKey, "k")), mkSvc("ns", "b", 2, withAnn(sharedKey, "j"), withPorts(443))},
			want: []string{"ns/a=203.0.113.10", "ns/b=203.0.113.11"}},
		{name: "sharing requested IP with a port clash", pools: two,
			svcs: []*corev1.Service{mkSvc("ns", "a", 1, withAnn(sharedKey, "k"), withLBIP("203.0.113.11")), mkSvc("ns", "b", 2, withAnn(sharedKey, "k"), withLBIP("203.0.113.11"))},
			want: []string{"ns/a=203.0.113.11", "ns/b!IPTaken"}},
		{name: "sharing UDP and TCP on one port", pools: two,
			svcs: []*corev1.Service{
				mkSvc("ns", "a", 1, withAnn(sharedKey, "k")),
				mkSvc("ns", "b", 2, withAnn(sharedKey, "k"), func(s *corev1.Service) { s.Spec.Ports[0].Protocol = corev1.ProtocolUDP }),
			},
			want: []string{"ns/a=203.0.113.10", "ns/b=203.0.113.10"}},
		{name: "sharing with Local policy needs the same pods", pools: two,
			svcs: []*corev1.Service{
				mkSvc("ns", "a", 1, withAnn(sharedKey, "k"), withLocal(map[string]string{"app": "x"})),
				mkSvc("ns", "b", 2, withAnn(sharedKey, "k"), withLocal(map[string]string{"app": "x"}), withPorts(443)),
				mkSvc("ns", "c", 3, withAnn(sharedKey, "k"), withLocal(map[string]string{"app": "y"}), withPorts(8080)),
			},
			want: []string{"ns/a=203.0.113.10", "ns/b=203.0.113.10", "ns/c=203.0.113.11"}},
		{name: "sharing between Local and Cluster policies", pools: two,
			svcs: []*corev1.Service{
				mkSvc("ns", "a", 1, withAnn(sharedKey, "k"), withLocal(nil)),
				mkSvc("ns", "b", 2, withAnn(sharedKey, "k"), withPorts(443)),
			},
			want: []string{"ns/a=203.0.113.10", "ns/b=203.0.113.11"}},
		{name: "dual-stack required", pools: both,
			svcs: []*corev1.Service{mkSvc("ns", "a", 1, withFamilies(dual, fam6, fam4))},
			want: []string{"ns/a=2001:db8:0:2::,203.0.113.10"}},
		{name: "dual-stack required but no IPv6 pool: nothing", pools: two,
			svcs: []*corev1.Service{mkSvc("ns", "a", 1, withFamilies(dual, fam4, fam6), withStatus("203.0.113.10"))},
			want: []string{"ns/a!PoolExhausted"}},
		{name: "the half a failed dual-stack Service gave back is handed out again", pools: two,
			svcs: []*corev1.Service{mkSvc("ns", "c", 1), mkSvc("ns", "a", 2, withFamilies(dual, fam4, fam6), withStatus("203.0.113.10")), mkSvc("ns", "b", 3)},
			want: []string{"ns/a!PoolExhausted", "ns/b=203.0.113.10", "ns/c=203.0.113.11"}},
		{name: "dual-stack preferred takes what it can", pools: two,
			svcs: []*corev1.Service{mkSvc("ns", "a", 1, withFamilies(preferDual, fam4, fam6))},
			want: []string{"ns/a=203.0.113.10"}},
		{name: "dual-stack preferred gains the missing family", pools: both,
			svcs: []*corev1.Service{mkSvc("ns", "a", 1, withFamilies(preferDual, fam4, fam6), withStatus("203.0.113.11"))},
			want: []string{"ns/a=203.0.113.11,2001:db8:0:2::"}},
		{name: "dual-stack from separate pools, the held pool first",
			pools: []*metallbv1beta1.IPAddressPool{mkPool("a", []string{"2001:db8:0:2::/64"}), mkPool("b", []string{"203.0.113.10/32", "2001:db8:0:3::/64"})},
			svcs:  []*corev1.Service{mkSvc("ns", "a", 1, withFamilies(dual, fam4, fam6)), mkSvc("ns", "b", 2, withFamilies(dual, fam6, fam4))},
			want:  []string{"ns/a=203.0.113.10,2001:db8:0:3::", "ns/b!PoolExhausted"}},
		{name: "single stack drops the other family", pools: both,
			svcs: []*corev1.Service{mkSvc("ns", "a", 1, withFamilies(single, fam6), withStatus("203.0.113.10", "2001:db8:0:2::7"))},
			want: []string{"ns/a=2001:db8:0:2::7"}},
		{name: "dual-stack requested pair", pools: both,
			svcs: []*corev1.Service{mkSvc("ns", "a", 1, withFamilies(dual, fam4, fam6), withAnn(lbIPs, "2001:db8:0:2::9, 203.0.113.11"))},
			want: []string{"ns/a=203.0.113.11,2001:db8:0:2::9"}},
		{name: "dual-stack required, one requested", pools: both,
			svcs: []*corev1.Service{mkSvc("ns", "a", 1, withFamilies(dual, fam4, fam6), withAnn(lbIPs, "203.0.113.11"))},
			want: []string{"ns/a!BadAnnotation"}},
		{name: "address left the pool", pools: two,
			svcs: []*corev1.Service{mkSvc("ns", "a", 1, withStatus("203.0.113.99"))},
			want: []string{"ns/a=203.0.113.10"}},
		{name: "address kept while some pool is invalid",
			pools: []*metallbv1beta1.IPAddressPool{mkPool("a", []string{"203.0.113.10/32"}), mkPool("b", []string{"203.0.113.20-"})},
			svcs:  []*corev1.Service{mkSvc("ns", "a", 1, withStatus("203.0.113.20")), mkSvc("ns", "b", 2)},
			want:  []string{"ns/a=203.0.113.20", "ns/b=203.0.113.10"}},
		{name: "overlapping pool refused, first by name wins",
			pools: []*metallbv1beta1.IPAddressPool{mkPool("b", []string{"203.0.113.10/31"}), mkPool("a", []string{"203.0.113.11/32"})},
			svcs:  []*corev1.Service{mkSvc("ns", "a", 1, withAnn(addrPool, "b"))},
			want:  []string{"ns/a!UnknownPool"}},
		{name: "other classes and types are not ours", pools: two,
			svcs: []*corev1.Service{
				mkSvc("ns", "a", 1, withClass("example.com/lb"), withStatus("203.0.113.10")),
				mkSvc("ns", "b", 2, withClass("baregate.io/lb")),
				mkSvc("ns", "c", 3, func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeClusterIP }),
			},
			want: []string{"ns/b=203.0.113.10"}},
		{name: "restricted pools by priority, unset last, unrestricted after",
			pools: []*metallbv1beta1.IPAddressPool{
				mkPool("p0", []string{"203.0.113.1/32"}, allocTo(metallbv1beta1.ServiceAllocation{})),
				mkPool("p2", []string{"203.0.113.2/32"}, allocTo(metallbv1beta1.ServiceAllocation{Priority: 2})),
				mkPool("p1", []string{"203.0.113.3/32"}, allocTo(metallbv1beta1.ServiceAllocation{Priority: 1})),
				mkPool("open", []string{"203.0.113.4/32"}),
			},
			svcs: []*corev1.Service{mkSvc("ns", "a", 1), mkSvc("ns", "b", 2), mkSvc("ns", "c", 3), mkSvc("ns", "d", 4), mkSvc("ns", "e", 5)},
			want: []string{"ns/a=203.0.113.3", "ns/b=203.0.113.2", "ns/c=203.0.113.1", "ns/d=203.0.113.4", "ns/e!PoolExhausted"}},
		{name: "namespaces and selectors",
			pools: []*metallbv1beta1.IPAddressPool{
				mkPool("open", []string{"203.0.113.1/32"}),
				mkPool("team", []string{"203.0.113.2/32"}, allocTo(metallbv1beta1.ServiceAllocation{NamespaceSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"team": "a"}}}})),
				mkPool("listed", []string{"203.0.113.3/32"}, allocTo(metallbv1beta1.ServiceAllocation{Namespaces: []string{"listed"}})),
				mkPool("web", []string{"203.0.113.4/32"}, allocTo(metallbv1beta1.ServiceAllocation{ServiceSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"tier": "web"}}}})),
			},
			nss: []*corev1.Namespace{nsWith("teama", map[string]string{"team": "a"}), nsWith("listed", nil), nsWith("other", nil)},
			svcs: []*corev1.Service{
				mkSvc("teama", "s", 1), mkSvc("listed", "s", 2), mkSvc("other", "web", 3, withLabel("tier", "web")),
				mkSvc("other", "s", 4), mkSvc("other", "t", 5),
				mkSvc("other", "req", 6, withAnn(addrPool, "team")), mkSvc("other", "ip", 7, withLBIP("203.0.113.3")),
			},
			want: []string{"listed/s=203.0.113.3", "other/ip!PoolNotAllowed", "other/req!PoolNotAllowed", "other/s=203.0.113.1", "other/t!PoolExhausted", "other/web=203.0.113.4", "teama/s=203.0.113.2"}},
		{name: "avoidBuggyIPs across a /24 boundary",
			pools: []*metallbv1beta1.IPAddressPool{mkPool("a", []string{"203.0.113.254-203.0.114.1"}, avoidBuggy)},
			svcs:  []*corev1.Service{mkSvc("ns", "a", 1), mkSvc("ns", "b", 2), mkSvc("ns", "c", 3), mkSvc("ns", "d", 4, withLBIP("203.0.114.0"))},
			want:  []string{"ns/a=203.0.113.254", "ns/b=203.0.114.1", "ns/c!PoolExhausted", "ns/d!IPNotInPool"}},
		{name: "buggy IPs are fine without avoidBuggyIPs",
			pools: []*metallbv1beta1.IPAddressPool{mkPool("a", []string{"203.0.113.255-203.0.114.0"})},
			svcs:  []*corev1.Service{mkSvc("ns", "a", 1), mkSvc("ns", "b", 2)},
			want:  []string{"ns/a=203.0.113.255", "ns/b=203.0.114.0"}},
		{name: "IPv6 range", pools: []*metallbv1beta1.IPAddressPool{mkPool("a", []string{"2001:db8:0:2::ffff-2001:db8:0:2::1:0"})},
			svcs: []*corev1.Service{mkSvc("ns", "a", 1, withFamilies(single, fam6)), mkSvc("ns", "b", 2, withFamilies(single, fam6)), mkSvc("ns", "c", 3, withFamilies(single, fam6))},
			want: []string{"ns/a=2001:db8:0:2::ffff", "ns/b=2001:db8:0:2::1:0", "ns/c!PoolExhausted"}},
		{name: "external IPs are not handed out",
			pools: []*metallbv1beta1.IPAddressPool{mkPool("a", []string{"203.0.113.10/31"}, forExternal)},
			svcs: []*corev1.Service{
				mkSvc("ns", "ext", 1, func(s *corev1.Service) {
					s.Spec.Type = corev1.ServiceTypeClusterIP
					s.Spec.ExternalIPs = []string{"203.0.113.10"}
				}),
				mkSvc("ns", "a", 2), mkSvc("ns", "b", 3, withLBIP("203.0.113.10")),
			},
			want: []string{"ns/a=203.0.113.11", "ns/b!IPTaken"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := Allocate(snapshot(c.pools, c.svcs, c.nss...))
			if g := got(r); !slices.Equal(g, c.want) {
				t.Fatalf("got  %q\nwant %q", g, c.want)
			}
			for _, a := range r.Services {
				if a.Refusal != nil && a.Refusal.Message == "" {
					t.Errorf("%s: refusal %s without a message", a.Service, a.Refusal.Reason)
				}
			}
			// Writing the result and allocating again must change nothing: this is what makes
			// assignments survive restarts and leader changes.
			again := Allocate(snapshot(c.pools, applied(t, c.svcs, r), c.nss...))
			if g := got(again); !slices.Equal(g, c.want) {
				t.Fatalf("after applying: got %q\nwant %q", g, c.want)
			}
			for _, a := range again.Services {
				if a.Changed {
					t.Errorf("after applying, %s still changes", a.Service)
				}
			}
		})
	}
}

// TestAllocateStableUnderChurn checks the promise that an address never moves while its Service
// keeps it: across random creations, deletions and input orders, every surviving Service keeps
// what it was given, and no address is held twice without sharing.
func TestAllocateStableUnderChurn(t *testing.T) {
	pools := []*metallbv1beta1.IPAddressPool{mkPool("a", []string{"203.0.113.0/28"}), mkPool("b", []string{"203.0.113.100-203.0.113.105"}, avoidBuggy)}
	rng := rand.New(rand.NewPCG(1, 2))
	var svcs []*corev1.Service
	held := map[types.NamespacedName]string{}
	for round := range 300 {
		switch {
		case len(svcs) > 0 && rng.IntN(3) == 0:
			i := rng.IntN(len(svcs))
			delete(held, types.NamespacedName{Namespace: svcs[i].Namespace, Name: svcs[i].Name})
			svcs = slices.Delete(svcs, i, i+1)
		default:
			var opts []func(*corev1.Service)
			if rng.IntN(2) == 0 {
				opts = append(opts, withAnn(sharedKey, "k"+itoa(rng.IntN(2))), withPorts(int32(80+rng.IntN(4))))
			}
			svcs = append(svcs, mkSvc("ns", "s"+itoa(round), rng.IntN(50), opts...))
		}
		rng.Shuffle(len(svcs), func(i, j int) { svcs[i], svcs[j] = svcs[j], svcs[i] })
		r := Allocate(snapshot(pools, svcs))
		users := map[netip.Addr][]*corev1.Service{}
		for _, a := range r.Services {
			ip := ""
			if len(a.IPs) > 0 {
				ip = a.IPs[0].String()
			}
			if prev, ok := held[a.Service]; ok && prev != "" && prev != ip {
				t.Fatalf("round %d: %s moved from %s to %q", round, a.Service, prev, ip)
			}
			held[a.Service] = ip
		}
		svcs = applied(t, svcs, r)
		for _, s := range svcs {
			for _, in := range s.Status.LoadBalancer.Ingress {
				users[addr(in.IP)] = append(users[addr(in.IP)], s)
			}
		}
		for ip, us := range users {
			for _, u := range us[1:] {
				if sharingKey(u) == "" || sharingKey(u) != sharingKey(us[0]) {
					t.Fatalf("round %d: %s held by %s and %s without sharing", round, ip, us[0].Name, u.Name)
				}
			}
		}
	}
}

func TestAllocateClearAndExternal(t *testing.T) {
	pools := []*metallbv1beta1.IPAddressPool{
		mkPool("lb", []string{"203.0.113.0/24"}),
		mkPool("ext", []string{"198.51.100.0/24"}, forExternal, noAuto),
	}
	svcs := []*corev1.Service{
		mkSvc("ns", "was-lb", 1, withStatus("203.0.113.0"), func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeNodePort }),
		mkSvc("ns", "theirs", 2, withClass("example.com/lb"), withStatus("203.0.113.7")),
		mkSvc("ns", "e1", 3, func(s *corev1.Service) { s.Spec.ExternalIPs = []string{"198.51.100.5", "192.0.2.1"} }),
		mkSvc("ns", "e2", 4, func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeClusterIP
			s.Spec.ExternalIPs = []string{"198.51.100.5", "203.0.113.9"}
		}),
	}
	r := Allocate(snapshot(pools, svcs))
	if want := []types.NamespacedName{{Namespace: "ns", Name: "was-lb"}}; !slices.Equal(r.Clear, want) {
		t.Errorf("Clear = %v, want %v", r.Clear, want)
	}
	want := []ExternalIP{{IP: addr("198.51.100.5"), Pool: "ext", Services: []types.NamespacedName{{Namespace: "ns", Name: "e1"}, {Namespace: "ns", Name: "e2"}}}}
	if len(r.ExternalIPs) != 1 || r.ExternalIPs[0].IP != want[0].IP || r.ExternalIPs[0].Pool != "ext" || !slices.Equal(r.ExternalIPs[0].Services, want[0].Services) {
		t.Errorf("ExternalIPs = %+v, want %+v", r.ExternalIPs, want)
	}
	if g := got(r); !slices.Equal(g, []string{"ns/e1=203.0.113.0"}) {
		t.Errorf("allocations %q", g)
	}
}

func TestPoolStatus(t *testing.T) {
	pools := []*metallbv1beta1.IPAddressPool{
		mkPool("a", []string{"203.0.113.0/24", "2001:db8:0:2::/120"}, avoidBuggy),
		mkPool("huge", []string{"2001:db8:0:3::/64"}),
		mkPool("bad", []string{"not-an-ip"}),
	}
	svcs := []*corev1.Service{
		mkSvc("ns", "a", 1, withFamilies(dual, fam4, fam6)),
		mkSvc("ns", "b", 2, withAnn(sharedKey, "k")),
		mkSvc("ns", "c", 3, withAnn(sharedKey, "k"), withPorts(443)),
		mkSvc("ns", "d", 4, withFamilies(single, fam6), withAnn(addrPool, "huge")),
	}
	r := Allocate(snapshot(pools, svcs))
	byName := map[string]PoolStatus{}
	for _, p := range r.Pools {
		byName[p.Name] = p
	}
	if got, want := byName["a"].Status, (metallbv1beta1.IPAddressPoolStatus{AssignedIPv4: 2, AssignedIPv6: 1, AvailableIPv4: 252, AvailableIPv6: 255}); got != want {
		t.Errorf("pool a status %+v, want %+v", got, want)
	}
	if got, want := byName["huge"].Status, (metallbv1beta1.IPAddressPoolStatus{AssignedIPv6: 1, AvailableIPv6: 1<<63 - 2}); got != want {
		t.Errorf("pool huge status %+v, want %+v", got, want)
	}
	if byName["bad"].Err == nil || len(r.Pools) != 3 {
		t.Errorf("pool bad: %+v (of %d)", byName["bad"], len(r.Pools))
	}
}

// FuzzAllocateRequests feeds arbitrary annotations and spec.loadBalancerIP to Allocate beside a
// well-behaved Service: nothing may panic, every address handed out must lie in a pool that admits
// it, and the older, well-behaved Service keeps its address whatever its neighbour asks.
func FuzzAllocateRequests(f *testing.F) {
	f.Add("203.0.113.10", "", "a", "k", "")
	f.Add("203.0.113.10,2001:db8:0:2::1", "", "", "", "")
	f.Add("", "203.0.113.11", "b", "", "")
	f.Add("", "", "nope", "k", "203.0.113.10")
	f.Add("x,,y", "::", "", "", "not-an-ip")
	pools := []*metallbv1beta1.IPAddressPool{
		mkPool("a", []string{"203.0.113.10-203.0.113.12", "2001:db8:0:2::/126"}),
		mkPool("b", []string{"203.0.113.20/32"}, noAuto, avoidBuggy),
	}
	f.Fuzz(func(t *testing.T, ips, lbIP, pool, share, status string) {
		wild := mkSvc("ns", "wild", 1, withAnn(lbIPs, ips), withAnn(addrPool, pool), withAnn(sharedKey, share),
			withLBIP(lbIP), withStatus(status), withFamilies(preferDual, fam4, fam6))
		if ips == "" {
			delete(wild.Annotations, lbIPs)
		}
		tame := mkSvc("ns", "tame", 0, withStatus("203.0.113.12"))
		r := Allocate(snapshot(pools, []*corev1.Service{wild, tame}))
		parsed, _ := ParsePools(pools)
		for _, a := range r.Services {
			for i, ip := range a.IPs {
				if p := PoolFor(parsed, ip); p == nil || p.Name != a.Pools[i] {
					t.Fatalf("%s got %s, outside its pool %q", a.Service, ip, a.Pools[i])
				}
			}
			if a.Service.Name == "tame" && (len(a.IPs) != 1 || a.IPs[0] != addr("203.0.113.12")) {
				t.Fatalf("tame lost its address: %+v", a)
			}
			if a.Service.Name == "wild" && slices.Contains(a.IPs, addr("203.0.113.12")) {
				t.Fatalf("wild took tame's address: %+v", a)
			}
		}
	})
}
