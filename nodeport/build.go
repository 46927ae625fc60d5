package nodeport

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/knftables"

	"github.com/baregate/baregate/internal/cluster"
)

// Options are Build's inputs besides the snapshot, resolved from Config and the node.
type Options struct {
	// MasqueradeMark is the fwmark bit (a single set bit) that asks postrouting to masquerade.
	MasqueradeMark uint32
	MasqueradeAll  bool
	// ClusterCIDRs are the pod ranges; empty means the union of the Nodes' spec.podCIDRs.
	ClusterCIDRs []netip.Prefix
	// RestrictNodePorts serves NodePorts only on NodePortAddresses instead of every non-loopback
	// local address.
	RestrictNodePorts bool
	NodePortAddresses []netip.Addr
}

// Labels and annotations kube-proxy honours and so do we.
const (
	labelServiceProxyName = "service.kubernetes.io/service-proxy-name"
	labelZone             = "topology.kubernetes.io/zone"
)

// Names of the fixed chains, sets and maps of each table.
const (
	chainServices       = "services"
	chainMasquerading   = "masquerading"
	chainMarkMasq       = "mark-for-masquerade"
	chainEndpointsCheck = "service-endpoints-check"
	chainReject         = "reject-chain"
	mapServiceIPs       = "service-ips"
	mapServiceNodePorts = "service-nodeports"
	mapNoEndpointIPs    = "no-endpoint-services"
	mapNoEndpointPorts  = "no-endpoint-nodeports"
	setClusterIPs       = "cluster-ips"
	setPodCIDRs         = "pod-cidrs"
	setNodePortIPs      = "nodeport-ips"
	setHairpin          = "hairpin"
	// The fast path's data (see pickChain): endpoints by frontend and slot, and the frontends whose
	// traffic is masqueraded because it comes from outside (externalTrafficPolicy Cluster).
	mapFrontendEndpoints = "frontend-endpoints"
	mapNodePortEndpoints = "nodeport-endpoints"
	setExternalMasq      = "external-masq"
	setNodePortMasq      = "nodeport-masq"
	verdictRejectService = "goto " + chainReject
)

// family holds what differs between the ip and ip6 tables.
type family struct {
	nft      knftables.Family
	ip       string // the payload keyword: ip or ip6
	addrType string
	loopback string
	is       func(netip.Addr) bool
}

var families = [2]family{
	{nft: knftables.IPv4Family, ip: "ip", addrType: "ipv4_addr", loopback: "127.0.0.0/8", is: netip.Addr.Is4},
	{nft: knftables.IPv6Family, ip: "ip6", addrType: "ipv6_addr", loopback: "::1", is: func(a netip.Addr) bool { return a.Is6() }},
}

// Build computes the ruleset this node (snap.NodeName) should have. It is pure: the same snapshot and
// options give the same Desired.
func Build(snap *cluster.Snapshot, opts Options) *Desired {
	return NewBuilder().Build(snap, opts)
}

// Builder computes Desired states one after another, reusing each Service's piece from the previous
// Build when neither the Service nor its EndpointSlices changed (the snapshot shares unchanged
// objects, so identity is the test). One change among 10k Services then costs one Service's work.
// A Builder is not safe for concurrent use.
type Builder struct {
	// context is what every piece depends on besides its own objects; when it changes, nothing is
	// reused.
	context string
	// prevSnap and prev are the last snapshot built and its result.
	prevSnap *cluster.Snapshot
	prev     *Desired
}

// NewBuilder returns a Builder with nothing cached.
func NewBuilder() *Builder {
	return &Builder{}
}

// Build computes the ruleset for snap, as the package-level Build does. Options only shape the
// skeleton, so they may differ between calls without losing the cache.
//
// Only the Services the snapshot reports changed since the previous one are looked at (see the
// contract on cluster.Snapshot), and of those, a Service still made of the same objects keeps its
// piece; the result records what it was derived from, for kernelState.diff.
func (bl *Builder) Build(snap *cluster.Snapshot, opts Options) *Desired {
	podCIDRs := opts.ClusterCIDRs
	if len(podCIDRs) == 0 {
		podCIDRs = nodePodCIDRs(snap)
	}
	zone := ""
	if n := snap.Nodes[snap.NodeName]; n != nil {
		zone = n.Labels[labelZone]
	}
	ctx := buildContext(snap, zone)
	prev := bl.prev
	if ctx != bl.context {
		prev = nil
	}
	d := &Desired{
		HealthChecks: map[int32]HealthCheck{},
		UDP:          map[string]map[string]bool{},
	}
	for i, f := range families {
		d.base[i] = newTable(f.nft)
		baseRules(d.base[i], f, opts, podCIDRs)
	}
	piece := func(svc *cluster.Service) *serviceRules {
		if prev != nil {
			if old := prev.services[svc.Key()]; old != nil && old.madeOf(svc) {
				return old
			}
		}
		return buildService(snap, svc, zone)
	}
	if prev != nil {
		d.services, d.Verdicts = maps.Clone(prev.services), maps.Clone(prev.Verdicts)
		// Only the diff against prev needs prev; older ones may go.
		d.parent, prev.parent = prev, nil
		for _, key := range snap.ServicesChanged(bl.prevSnap) {
			d.changed = append(d.changed, key)
			svc := snap.Service(key)
			if svc == nil || !forwarded(svc.Service) {
				delete(d.services, key)
				delete(d.Verdicts, key)
				continue
			}
			r := piece(svc)
			d.services[key], d.Verdicts[key] = r, r.verdict
		}
	} else {
		d.services = make(map[types.NamespacedName]*serviceRules, len(snap.Services))
		d.Verdicts = make(map[types.NamespacedName]string, len(snap.Services))
		var todo []*cluster.Service
		for _, svc := range snap.Services {
			if forwarded(svc.Service) {
				todo = append(todo, svc)
			}
		}
		for _, r := range buildAll(todo, piece) {
			d.services[r.key], d.Verdicts[r.key] = r, r.verdict
		}
	}
	d.Services = len(d.services)
	var picks [2]map[pick]bool
	for _, r := range d.services {
		for i, ps := range r.picks {
			for _, pk := range ps {
				if picks[i] == nil {
					picks[i] = map[pick]bool{}
				}
				picks[i][pk] = true
			}
		}
		if len(r.problems) > 0 {
			d.Problems = append(d.Problems, r.problems...)
		}
		if r.healthCheckPort != 0 {
			d.HealthChecks[r.healthCheckPort] = r.healthCheck
		}
		if len(r.udp) == 0 {
			continue // ranging over an empty map is not free, and this loop runs for every Service
		}
		for fe, eps := range r.udp {
			if d.UDP[fe] == nil {
				d.UDP[fe] = map[string]bool{}
			}
			maps.Copy(d.UDP[fe], eps)
		}
	}
	for i, f := range families {
		for pk := range picks[i] {
			d.base[i].chain(pk.chain(), pk.rule(f))
		}
	}
	slices.SortFunc(d.Problems, func(a, b Problem) int {
		return cmp.Or(compareKeys(a.Service, b.Service), strings.Compare(a.Reason, b.Reason), strings.Compare(a.Message, b.Message))
	})
	bl.context, bl.prevSnap, bl.prev = ctx, snap, d
	return d
}

// buildAll computes the pieces of svcs, in parallel when there are many (a cold start at 10k
// Services spends a quarter of its time here): each piece depends only on its Service and the
// snapshot, which nobody modifies.
func buildAll(svcs []*cluster.Service, piece func(*cluster.Service) *serviceRules) []*serviceRules {
	out := make([]*serviceRules, len(svcs))
	workers := min(runtime.GOMAXPROCS(0), len(svcs)/500+1)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(svcs); i += workers {
				out[i] = piece(svcs[i])
			}
		})
	}
	wg.Wait()
	return out
}

// madeOf reports whether svc is made of the objects r was built from.
func (r *serviceRules) madeOf(svc *cluster.Service) bool {
	return r.entry == svc || (r.svc == svc.Service && slices.Equal(r.slices, svc.Slices))
}

// buildContext renders what all pieces depend on: this node, its zone, and which nodes are live.
func buildContext(snap *cluster.Snapshot, zone string) string {
	var b strings.Builder
	b.WriteString(snap.NodeName + "|" + zone + "|")
	if snap.LiveNodes == nil {
		b.WriteString("*")
	}
	for _, n := range slices.Sorted(maps.Keys(snap.LiveNodes)) {
		if snap.LiveNodes[n] {
			b.WriteString(n + ",")
		}
	}
	return b.String()
}

// buildService computes one Service's piece.
func buildService(snap *cluster.Snapshot, svc *cluster.Service, zone string) *serviceRules {
	r := &serviceRules{key: svc.Key(), entry: svc, svc: svc.Service, slices: svc.Slices, udp: map[string]map[string]bool{}}
	fe, problems := parseFrontends(svc.Service)
	r.problems = problems
	b := serviceBuilder{r: r, snap: snap, svc: svc, zone: zone, fe: fe}
	var verdicts []string
	for i, f := range families {
		r.tables[i] = newTable(f.nft)
		verdicts = append(verdicts, b.build(r.tables[i], f)...)
		r.rules += r.tables[i].rules()
		r.elements += r.tables[i].elementCount()
	}
	r.verdict = strings.Join(verdicts, "; ")
	if hc := svc.Spec.HealthCheckNodePort; hc != 0 && svc.Spec.Type == corev1.ServiceTypeLoadBalancer &&
		svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal {
		r.healthCheckPort = hc
		r.healthCheck = HealthCheck{Service: svc.Key(), LocalEndpoints: b.localCount}
	}
	return r
}

// forwarded reports whether kube-proxy would program svc: not headless, not ExternalName, and not
// claimed by another proxy through service.kubernetes.io/service-proxy-name.
func forwarded(svc *corev1.Service) bool {
	if _, other := svc.Labels[labelServiceProxyName]; other {
		return false
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return false
	}
	return svc.Spec.ClusterIP != corev1.ClusterIPNone && svc.Spec.ClusterIP != ""
}

func nodePodCIDRs(snap *cluster.Snapshot) []netip.Prefix {
	var out []netip.Prefix
	for _, n := range snap.Nodes {
		for _, c := range n.Spec.PodCIDRs {
			if p, err := netip.ParsePrefix(c); err == nil {
				out = append(out, p.Masked())
			}
		}
	}
	return out
}

// baseRules adds the fixed skeleton: hooks, dispatch through the maps, masquerading and reject.
func baseRules(t *Table, f family, opts Options, podCIDRs []netip.Prefix) {
	hook := func(name string, typ knftables.BaseChainType, h knftables.BaseChainHook, prio knftables.BaseChainPriority, rules ...string) {
		c := t.chain(name, rules...)
		c.Def.Type, c.Def.Hook, c.Def.Priority = &typ, &h, &prio
	}
	// DNAT in prerouting (traffic arriving) and output (traffic from this node's own processes).
	hook("nat-prerouting", knftables.NATType, knftables.PreroutingHook, knftables.DNATPriority, "jump "+chainServices)
	hook("nat-output", knftables.NATType, knftables.OutputHook, knftables.DNATPriority, "jump "+chainServices)
	hook("nat-postrouting", knftables.NATType, knftables.PostroutingHook, knftables.SNATPriority, "jump "+chainMasquerading)
	// Services without endpoints were not DNATed, so the filter hooks still see their frontend; output
	// must run before DNAT (dstnat is -100) to see it at all; nft only accepts the name dstnat in nat chains.
	check := "ct state new jump " + chainEndpointsCheck
	hook("filter-input", knftables.FilterType, knftables.InputHook, knftables.FilterPriority+" - 10", check)
	hook("filter-forward", knftables.FilterType, knftables.ForwardHook, knftables.FilterPriority+" - 10", check)
	hook("filter-output", knftables.FilterType, knftables.OutputHook, "-110", check)

	mark := fmt.Sprintf("0x%x", opts.MasqueradeMark)
	t.chain(chainMarkMasq, "meta mark set meta mark | "+mark)
	t.chain(chainMasquerading,
		// A pod reaching itself through a Service must see the node as the source, or it would
		// answer itself directly and the client would drop the reply.
		fmt.Sprintf("%s saddr . %s daddr @%s jump %s", f.ip, f.ip, setHairpin, chainMarkMasq),
		fmt.Sprintf("meta mark & %s == 0 return", mark),
		fmt.Sprintf("meta mark set meta mark ^ %s", mark),
		"masquerade fully-random")
	t.chain(chainReject, "reject")

	t.set(knftables.Set{Name: setClusterIPs, Type: f.addrType})
	t.set(knftables.Set{Name: setHairpin, Type: f.addrType + " . " + f.addrType})
	t.set(knftables.Set{Name: setPodCIDRs, Type: f.addrType, Flags: []knftables.SetFlag{knftables.IntervalFlag}})
	for _, p := range mergePrefixes(podCIDRs, f) {
		t.element(setPodCIDRs, []string{p.String()})
	}
	ipPortKey := f.addrType + " . inet_proto . inet_service : verdict"
	portKey := "inet_proto . inet_service : verdict"
	t.vmap(knftables.Map{Name: mapServiceIPs, Type: ipPortKey})
	t.vmap(knftables.Map{Name: mapServiceNodePorts, Type: portKey})
	t.vmap(knftables.Map{Name: mapNoEndpointIPs, Type: ipPortKey})
	t.vmap(knftables.Map{Name: mapNoEndpointPorts, Type: portKey})
	// typeof, because a plain type cannot name numgen's 32-bit integer; "mod 1" is only its type.
	t.vmap(knftables.Map{Name: mapFrontendEndpoints, TypeOf: fmt.Sprintf("%s daddr . meta l4proto . th dport . numgen random mod 1 : %s daddr . th dport", f.ip, f.ip)})
	t.vmap(knftables.Map{Name: mapNodePortEndpoints, TypeOf: fmt.Sprintf("meta l4proto . th dport . numgen random mod 1 : %s daddr . th dport", f.ip)})
	t.set(knftables.Set{Name: setExternalMasq, Type: f.addrType + " . inet_proto . inet_service"})
	t.set(knftables.Set{Name: setNodePortMasq, Type: "inet_proto . inet_service"})

	var services []string
	switch {
	case opts.MasqueradeAll:
		services = append(services, fmt.Sprintf("%s daddr @%s jump %s", f.ip, setClusterIPs, chainMarkMasq))
	case len(podCIDRs) > 0:
		// Traffic from outside the pod network (the node itself, other hosts routing to ClusterIPs)
		// must come back through this node.
		services = append(services, fmt.Sprintf("%s daddr @%s %s saddr != @%s jump %s", f.ip, setClusterIPs, f.ip, setPodCIDRs, chainMarkMasq))
	}
	ipDispatch := fmt.Sprintf("%s daddr . meta l4proto . th dport vmap @", f.ip)
	nodeMatch := fmt.Sprintf("fib daddr type local %s daddr != %s", f.ip, f.loopback)
	if opts.RestrictNodePorts {
		t.set(knftables.Set{Name: setNodePortIPs, Type: f.addrType})
		for _, a := range opts.NodePortAddresses {
			if f.is(a) {
				t.element(setNodePortIPs, []string{a.String()})
			}
		}
		nodeMatch = fmt.Sprintf("%s daddr @%s", f.ip, setNodePortIPs)
	}
	portDispatch := nodeMatch + " meta l4proto . th dport vmap @"
	// External traffic to the fast path's frontends is marked here, by set membership, instead of in a
	// chain per Service; the NodePort check only runs for what no address frontend took, as the
	// dispatch it precedes.
	externalMasq := fmt.Sprintf("%s daddr . meta l4proto . th dport @%s jump %s", f.ip, setExternalMasq, chainMarkMasq)
	nodePortMasq := fmt.Sprintf("%s meta l4proto . th dport @%s jump %s", nodeMatch, setNodePortMasq, chainMarkMasq)
	// NodePorts come last: a ClusterIP, ExternalIP or LB IP that is also local wins, as in kube-proxy.
	t.chain(chainServices, append(services, externalMasq, ipDispatch+mapServiceIPs, nodePortMasq, portDispatch+mapServiceNodePorts)...)
	t.chain(chainEndpointsCheck, ipDispatch+mapNoEndpointIPs, portDispatch+mapNoEndpointPorts)
}

// mergePrefixes keeps the prefixes of family f, dropping those inside another, since an interval set
// refuses overlapping elements.
func mergePrefixes(in []netip.Prefix, f family) []netip.Prefix {
	var cands []netip.Prefix
	for _, p := range in {
		if f.is(p.Addr()) {
			cands = append(cands, p.Masked())
		}
	}
	// Widest first, so a prefix is only kept when no wider one already covers it.
	slices.SortFunc(cands, func(a, b netip.Prefix) int {
		return cmp.Or(cmp.Compare(a.Bits(), b.Bits()), a.Addr().Compare(b.Addr()))
	})
	var out []netip.Prefix
	for _, p := range cands {
		if !slices.ContainsFunc(out, func(q netip.Prefix) bool { return q.Contains(p.Addr()) }) {
			out = append(out, p)
		}
	}
	return out
}
