package nodeport

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/knftables"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// representative is a small cluster with one Service of each kind the golden file documents.
func representative() *world {
	timeout := int32(60)
	itpLocal := corev1.ServiceInternalTrafficPolicyLocal
	return &world{
		services: []*corev1.Service{
			svc("web", "198.19.0.10", nodePort(30080), func(s *corev1.Service) { s.Spec.ExternalIPs = []string{"198.51.100.10"} }),
			svc("lb-local", "198.19.0.11", nodePort(30081), loadBalancer("203.0.113.11"), etpLocal(32011), func(s *corev1.Service) {
				s.Spec.LoadBalancerSourceRanges = []string{"192.0.2.0/24"}
			}),
			svc("sticky", "198.19.0.12", func(s *corev1.Service) {
				s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
				s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: &timeout}}
			}),
			svc("internal", "198.19.0.13", func(s *corev1.Service) { s.Spec.InternalTrafficPolicy = &itpLocal }),
			svc("empty", "198.19.0.14", nodePort(30084)),
			svc("dns", "198.19.0.15", func(s *corev1.Service) {
				s.Spec.ClusterIPs = []string{"198.19.0.15", "2001:db8:2::15"}
				s.Spec.Ports[0].Protocol = corev1.ProtocolUDP
			}),
		},
		slices: []*discoveryv1.EndpointSlice{
			twoNodeSlice("web"), twoNodeSlice("lb-local"), twoNodeSlice("sticky"), twoNodeSlice("internal"),
			slice("dns", "dns-1", []discoveryv1.EndpointPort{port("http", corev1.ProtocolUDP, 5353)}, ep("198.18.1.15", nodeA)),
			slice("dns", "dns-2", []discoveryv1.EndpointPort{port("http", corev1.ProtocolUDP, 5353)}, ep("2001:db8:1:1::15", nodeA)),
		},
	}
}

func TestGoldenRuleset(t *testing.T) {
	got := program(t, Build(representative().snapshot(), testOpts)).Dump()
	path := filepath.Join("testdata", "representative.nft")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	wantBytes, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading the golden file (run go test -update to create it): %v", err)
	}
	if got != string(wantBytes) {
		t.Errorf("ruleset differs from %s (go test ./nodeport -run TestGoldenRuleset -update rewrites it):\n%s", path, got)
	}
}

// TestPartialSyncMatchesFullSync walks through a series of changes; after each, the tables patched by
// partial transactions must equal tables written from scratch.
func TestPartialSyncMatchesFullSync(t *testing.T) {
	w := representative()
	steps := []struct {
		name   string
		change func(w *world)
	}{
		{"endpoint removed", func(w *world) { w.slices[0] = slice("web", "web-1", nil, ep("198.18.1.10", nodeA)) }},
		{"service added", func(w *world) { w.services = append(w.services, svc("new", "198.19.0.99", nodePort(30099))) }},
		{"empty service gets endpoints", func(w *world) { w.slices = append(w.slices, twoNodeSlice("empty")) }},
		{"affinity dropped", func(w *world) { w.services[2] = svc("sticky", "198.19.0.12") }},
		{"affinity timeout changed", func(w *world) {
			w.services[2] = svc("sticky", "198.19.0.12", func(s *corev1.Service) {
				s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			})
		}},
		{"etp back to cluster", func(w *world) {
			// A snapshot's objects are never changed in place: a change is a new object.
			w.services[1] = w.services[1].DeepCopy()
			w.services[1].Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
		}},
		{"service deleted", func(w *world) { w.services = w.services[2:] }},
		{"everything deleted", func(w *world) { w.services, w.slices = nil, nil }},
	}
	ctx := context.Background()
	live := knftables.NewFake("", "")
	bl := NewBuilder()
	prev := bl.Build(w.snapshot(), testOpts)
	tx := live.NewTransaction()
	fullTransaction(tx, prev, nil)
	if err := live.Run(ctx, tx); err != nil {
		t.Fatal(err)
	}
	k := newKernelState(prev)
	for _, step := range steps {
		step.change(w)
		d := bl.Build(w.snapshot(), testOpts)
		tx := live.NewTransaction()
		addOps(tx, k.diff(d))
		if err := live.Run(ctx, tx); err != nil {
			t.Fatalf("%s: partial transaction failed: %v\n%s", step.name, err, tx)
		}
		// Element order in a dump follows insertion order, which means nothing to the kernel.
		if diff := lineDiff(live.Dump(), program(t, Build(w.snapshot(), testOpts)).Dump()); diff != "" {
			t.Fatalf("%s: partial sync result differs from full sync:\n%s", step.name, diff)
		}
	}
}

// TestOneChangeTouchesOnlyItsService checks the point of the fast path: removing an endpoint from one
// of many Services changes only elements (its slots and its dispatch to the pick chain for its new
// count), plus that pick chain when no Service had the count before.
func TestOneChangeTouchesOnlyItsService(t *testing.T) {
	w := &world{}
	for i := range 100 {
		name := "s" + itoa(i)
		w.services = append(w.services, svc(name, "198.19.1."+itoa(i), nodePort(int32(30000+i))))
		w.slices = append(w.slices, twoNodeSlice(name))
	}
	bl := NewBuilder()
	k := newKernelState(bl.Build(w.snapshot(), testOpts))
	change := func(i int) *knftables.Transaction {
		w.slices[i] = slice(w.services[i].Name, w.services[i].Name+"-1", nil, ep("198.18.1.10", nodeA))
		tx := knftables.NewFake("", "").NewTransaction()
		addOps(tx, k.diff(bl.Build(w.snapshot(), testOpts)))
		return tx
	}
	// The first Service with one endpoint brings the pick chains for one endpoint (chain and rule,
	// for the address and the NodePort frontends). No hairpin element: the other Services still
	// claim both endpoints.
	tx := change(42)
	if n, chains := tx.NumOperations(), strings.Count(tx.String(), "pick-1"); n != 10 || chains != 6 {
		t.Errorf("first change to one endpoint took %d operations, %d naming pick-1; want 10 and 6:\n%s", n, chains, tx)
	}
	// The second is elements only: one slot fewer and a new dispatch, for each of the two frontends.
	tx = change(43)
	if n, els := tx.NumOperations(), strings.Count(tx.String(), " element "); n != 6 || els != n {
		t.Errorf("second change took %d operations (%d elements); want 6 elements:\n%s", n, els, tx)
	}
	full := knftables.NewFake("", "").NewTransaction()
	fullTransaction(full, bl.Build(w.snapshot(), testOpts), nil)
	if full.NumOperations() < 100*tx.NumOperations() {
		t.Errorf("partial %d vs full %d operations", tx.NumOperations(), full.NumOperations())
	}
}

func itoa(i int) string { return fmtInt(i) }

// lineDiff lists the lines only in got (-) or only in want (+).
func lineDiff(got, want string) string {
	count := map[string]int{}
	for _, l := range strings.Split(got, "\n") {
		count[l]++
	}
	for _, l := range strings.Split(want, "\n") {
		count[l]--
	}
	var out []string
	for l, n := range count {
		switch {
		case n > 0:
			out = append(out, "- "+l)
		case n < 0:
			out = append(out, "+ "+l)
		}
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}

func TestGroupElements(t *testing.T) {
	in := `add table ip baregate
add element ip baregate hairpin { 198.18.1.10 . 198.18.1.10 }
add element ip baregate hairpin { 198.18.1.11 . 198.18.1.11 }
add element ip baregate service-ips { 198.19.0.10 . tcp . 80 : goto pick-2 }
add rule ip baregate pick-1 meta l4proto { tcp, udp, sctp } dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 1 map @frontend-endpoints
add element ip baregate hairpin { 198.18.1.12 . 198.18.1.12 }
`
	want := `add table ip baregate
add element ip baregate hairpin { 198.18.1.10 . 198.18.1.10, 198.18.1.11 . 198.18.1.11 }
add element ip baregate service-ips { 198.19.0.10 . tcp . 80 : goto pick-2 }
add rule ip baregate pick-1 meta l4proto { tcp, udp, sctp } dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 1 map @frontend-endpoints
add element ip baregate hairpin { 198.18.1.12 . 198.18.1.12 }
`
	if got := groupElements(in); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	// The golden ruleset, grouped, holds the same commands.
	full := knftables.NewFake("", "").NewTransaction()
	fullTransaction(full, Build(representative().snapshot(), testOpts), nil)
	grouped := groupElements(full.String())
	if strings.Count(grouped, "\n") >= strings.Count(full.String(), "\n") || strings.Count(grouped, " : ") != strings.Count(full.String(), " : ") {
		t.Errorf("grouping lost or kept every element line:\n%s", grouped)
	}
}
