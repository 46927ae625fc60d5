package lbip

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/baregate/baregate/internal/cluster"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
)

// fakeForwarding reports a fixed programmed generation, as nodeport would after applying it.
type fakeForwarding struct{ gen uint64 }

func (f *fakeForwarding) ForwardingStatus() cluster.ForwardingInfo {
	return cluster.ForwardingInfo{Generation: f.gen}
}

func newTestLB(t *testing.T, self string) *LB {
	t.Helper()
	lb, err := New(DefaultConfig(), cluster.Deps{NodeName: self, Client: fake.NewClientset(), Recorder: &record.FakeRecorder{}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return lb
}

func TestEligibleSince(t *testing.T) {
	a, b, c := netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("203.0.113.2"), netip.MustParseAddr("203.0.113.3")
	got := eligibleSince(map[netip.Addr]uint64{a: 3, b: 4}, []netip.Addr{a, c}, 9)
	want := map[netip.Addr]uint64{a: 3, c: 9}
	if len(got) != len(want) || got[a] != 3 || got[c] != 9 {
		t.Errorf("eligibleSince = %v; want %v (kept, new; the IP no longer eligible dropped)", got, want)
	}
	if !forwardingReady(got, a, 3) || forwardingReady(got, c, 8) || !forwardingReady(got, c, 9) || !forwardingReady(got, b, 0) {
		t.Errorf("forwardingReady wrong over %v", got)
	}
}

// TestClaimsWaitForForwarding walks one node (n1) through an externalTrafficPolicy Local Service whose
// endpoint moves to it, then a failover of an IP it has long been eligible for.
func TestClaimsWaitForForwarding(t *testing.T) {
	lb := newTestLB(t, "n1")
	fwd := &fakeForwarding{}
	lb.SetForwarding(fwd)
	ctx := context.Background()
	local, cl := "203.0.113.7", "203.0.113.8"
	in := func(endpointOn string) cluster.Inputs {
		return cluster.Inputs{NodeName: "n1",
			Nodes:            []*corev1.Node{node("n1"), node("n2")},
			Pools:            []*metallbv1beta1.IPAddressPool{pool("lb", "203.0.113.0/24")},
			L2Advertisements: []*metallbv1beta1.L2Advertisement{l2adv("all", metallbv1beta1.L2AdvertisementSpec{})},
			Services:         []*corev1.Service{lbService("local", true, local), lbService("cluster", false, cl)},
			EndpointSlices:   []*discoveryv1.EndpointSlice{slice("local", []string{endpointOn})},
		}
	}
	// claimed runs one sync's claim step over snapshot gen and returns the IPs claimed, each with
	// whether it is probed.
	claimed := func(gen uint64, inputs cluster.Inputs, live map[string]bool) map[string]bool {
		snap := cluster.NewSnapshot(gen, time.Now(), inputs)
		assign := Assign(snap, live)
		out := map[string]bool{}
		for _, c := range lb.claims(ctx, snap, assign, lb.since) {
			out[c.IP.String()] = c.Probe
		}
		next := map[netip.Addr]owned{}
		for _, a := range assign {
			next[a.IP] = owned{node: a.Node, since: time.Now()}
		}
		lb.since = next
		return out
	}
	both := map[string]bool{"n1": true, "n2": true}
	clOwner := pickNode([]string{"n1", "n2"}, netip.MustParseAddr(cl))

	// Generation 1: the endpoint is on n2; n1 may own only the Cluster Service's IP, once programmed.
	if got := claimed(1, in("n2"), both); len(got) != 0 {
		t.Fatalf("gen 1, nothing programmed: claimed %v; want nothing", got)
	}
	fwd.gen = 1
	got := claimed(1, in("n2"), both)
	if _, ok := got[local]; ok || (clOwner == "n1") != (len(got) == 1) {
		t.Fatalf("gen 1 programmed: claimed %v; want only %s and only if n1 owns it (%s does)", got, cl, clOwner)
	}
	// Generation 2: the endpoint moved to n1. Until n1's rules have it, n1 must not answer.
	if got := claimed(2, in("n1"), both); got[local] || len(got) > 1 {
		t.Fatalf("gen 2, forwarding at 1: claimed %v; want %s held", got, local)
	}
	if _, ok := lb.held[netip.MustParseAddr(local)]; !ok {
		t.Errorf("gen 2: %s not recorded as held: %v", local, lb.held)
	}
	fwd.gen = 2
	got = claimed(3, in("n1"), both)
	probe, ok := got[local]
	if !ok {
		t.Fatalf("gen 3, forwarding at 2: claimed %v; want %s (eligible since 2)", got, local)
	}
	if probe {
		t.Errorf("%s taken over from n2 after a hold was probed; a takeover is not", local)
	}
	if len(lb.held) != 0 {
		t.Errorf("held after release: %v", lb.held)
	}

	// n2 dies in generation 4, which forwarding has not programmed yet: n1 has been eligible for the
	// Cluster Service's IP since generation 1, so the failover is not held.
	got = claimed(4, in("n1"), map[string]bool{"n1": true})
	if _, ok := got[cl]; !ok {
		t.Errorf("failover at gen 4 with forwarding at 2: claimed %v; want %s at once", got, cl)
	}
}

func TestClaimsHoldIsBounded(t *testing.T) {
	lb := newTestLB(t, "n1")
	lb.SetForwarding(&fakeForwarding{}) // never programs anything
	snap := cluster.NewSnapshot(1, time.Now(), cluster.Inputs{NodeName: "n1",
		Nodes:            []*corev1.Node{node("n1")},
		Pools:            []*metallbv1beta1.IPAddressPool{pool("lb", "203.0.113.0/24")},
		L2Advertisements: []*metallbv1beta1.L2Advertisement{l2adv("all", metallbv1beta1.L2AdvertisementSpec{})},
		Services:         []*corev1.Service{lbService("a", false, "203.0.113.9")},
	})
	assign := Assign(snap, nil)
	if c := lb.claims(context.Background(), snap, assign, nil); len(c) != 0 {
		t.Fatalf("claimed %v before forwarding programmed anything", c)
	}
	ip := netip.MustParseAddr("203.0.113.9")
	h := lb.held[ip]
	h.since = h.since.Add(-forwardHoldLimit)
	lb.held[ip] = h
	c := lb.claims(context.Background(), snap, assign, nil)
	if len(c) != 1 || c[0].IP != ip || !c[0].Probe {
		t.Errorf("after the hold limit: claimed %v; want %s, probed (nobody announced it before)", c, ip)
	}
}
