package nodeport

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/knftables"

	"github.com/baregate/baregate/internal/cluster"
)

// defaultAffinityTimeout is the API's default for sessionAffinityConfig.clientIP.timeoutSeconds.
const defaultAffinityTimeout = 10800

// serviceBuilder adds one Service's chains and elements to the tables.
type serviceBuilder struct {
	r    *serviceRules
	snap *cluster.Snapshot
	svc  *cluster.Service
	zone string
	fe   frontends
	// localCount is the most local endpoints any port has, for the health check.
	localCount int
}

// target is one endpoint address and port that DNAT may pick.
type target struct {
	addr netip.Addr
	port int32
	slot []string // value's cache
}

func (t target) String() string { return netip.AddrPortFrom(t.addr, uint16(t.port)).String() }

// value is the target as the data of an endpoint slot: address . port. The frontends of one Service
// port share it (elements are never modified in place).
func (t *target) value() []string {
	if t.slot == nil {
		t.slot = []string{t.addr.String(), strconv.Itoa(int(t.port))}
	}
	return t.slot
}

// candidate is an endpoint with its port resolved for one Service port.
type candidate struct {
	ep *cluster.Endpoint
	t  target
}

// frontends are the Service's addresses besides NodePorts, parsed once for both families.
type frontends struct {
	clusterIPs, externalIPs, lbIPs []netip.Addr
	sourceRanges                   []netip.Prefix
}

func parseFrontends(svc *corev1.Service) (frontends, []Problem) {
	var fe frontends
	var problems []Problem
	bad := func(reason, format string, args ...any) {
		problems = append(problems, Problem{Service: svcKey(svc), Reason: reason, Message: fmt.Sprintf(format, args...)})
	}
	// parse accepts only plain addresses: netip also parses zones (fe80::1%eth0), which nft refuses.
	parse := func(s string) (netip.Addr, error) {
		a, err := netip.ParseAddr(s)
		if err == nil && a.Zone() != "" {
			err = fmt.Errorf("address %q has a zone", s)
		}
		return a.Unmap(), err
	}
	cips := svc.Spec.ClusterIPs
	if len(cips) == 0 {
		cips = []string{svc.Spec.ClusterIP}
	}
	for _, s := range cips {
		if a, err := parse(s); err == nil {
			fe.clusterIPs = append(fe.clusterIPs, a)
		} else {
			bad("InvalidClusterIP", "clusterIP %q is not an IP address; it is not forwarded", s)
		}
	}
	for _, s := range svc.Spec.ExternalIPs {
		if a, err := parse(s); err == nil {
			fe.externalIPs = append(fe.externalIPs, a)
		} else {
			bad("InvalidExternalIP", "externalIP %q is not an IP address; it is not forwarded", s)
		}
	}
	if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			// ipMode Proxy means the load balancer delivers to the node with its own address as the
			// destination, so the node must not capture the IP.
			if ing.IP == "" || (ing.IPMode != nil && *ing.IPMode == corev1.LoadBalancerIPModeProxy) {
				continue
			}
			if a, err := parse(ing.IP); err == nil {
				fe.lbIPs = append(fe.lbIPs, a)
			} else {
				bad("InvalidLoadBalancerIP", "status.loadBalancer.ingress IP %q is not an IP address; it is not forwarded", ing.IP)
			}
		}
		for _, s := range svc.Spec.LoadBalancerSourceRanges {
			if p, err := netip.ParsePrefix(strings.TrimSpace(s)); err == nil {
				fe.sourceRanges = append(fe.sourceRanges, p.Masked())
			} else {
				bad("InvalidLoadBalancerSourceRange", "loadBalancerSourceRanges entry %q is not a CIDR; it is ignored", s)
			}
		}
	}
	return fe, problems
}

func svcKey(svc *corev1.Service) types.NamespacedName {
	return types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
}

func inFamily(addrs []netip.Addr, f family) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		if f.is(a) {
			out = append(out, a)
		}
	}
	return out
}

// build adds the Service's rules for family f and returns a summary per port.
func (b *serviceBuilder) build(t *Table, f family) []string {
	spec := &b.svc.Spec
	clusterIPs := inFamily(b.fe.clusterIPs, f)
	if len(clusterIPs) == 0 {
		return nil // not of this family (single-stack)
	}
	externalIPs := inFamily(b.fe.externalIPs, f)
	lbIPs := inFamily(b.fe.lbIPs, f)
	hasNodePorts := spec.Type == corev1.ServiceTypeNodePort || spec.Type == corev1.ServiceTypeLoadBalancer
	etpLocal := hasNodePorts && spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
	itpLocal := spec.InternalTrafficPolicy != nil && *spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal

	var summaries []string
	for _, sp := range spec.Ports {
		proto := strings.ToLower(string(protocolOf(sp)))
		portName := sp.Name
		if portName == "" {
			portName = strconv.Itoa(int(sp.Port))
		}
		spid := fmt.Sprintf("%s/%s/%s/%s", b.svc.Namespace, b.svc.Name, proto, portName)
		port := strconv.Itoa(int(sp.Port))
		nodePort := ""
		if hasNodePorts && sp.NodePort != 0 {
			nodePort = strconv.Itoa(int(sp.NodePort))
		}
		clusterEps, localEps := b.endpoints(f, sp)
		b.localCount = max(b.localCount, len(localEps))
		b.recordUDP(sp, proto, port, nodePort, clusterIPs, externalIPs, lbIPs, clusterEps, localEps)

		summary := fmt.Sprintf("%s %s/%d: ", f.ip, proto, sp.Port)
		if len(clusterEps) == 0 {
			// No endpoint anywhere: refuse connections at once instead of letting clients time out.
			for _, ips := range [][]netip.Addr{clusterIPs, externalIPs, lbIPs} {
				for _, ip := range ips {
					t.element(mapNoEndpointIPs, []string{ip.String(), proto, port}, verdictRejectService)
				}
			}
			if nodePort != "" {
				t.element(mapNoEndpointPorts, []string{proto, nodePort}, verdictRejectService)
			}
			summaries = append(summaries, summary+"no endpoints, reject")
			continue
		}
		for _, eps := range [2][]target{clusterEps, localEps} {
			for i := range eps {
				// value caches the address string for the endpoint's slots below.
				a := eps[i].value()[0]
				t.element(setHairpin, []string{a, a})
			}
		}
		hasExternal := len(externalIPs) > 0 || len(lbIPs) > 0 || nodePort != ""
		if b.fast() {
			internal := clusterEps
			if itpLocal {
				internal = localEps
			}
			for _, ip := range clusterIPs {
				a := ip.String()
				b.frontend(t, f, a, proto, port, internal)
				t.element(setClusterIPs, []string{a})
			}
			for _, ip := range append(externalIPs, lbIPs...) {
				a := ip.String()
				b.frontend(t, f, a, proto, port, clusterEps)
				t.element(setExternalMasq, []string{a, proto, port})
			}
			if nodePort != "" {
				b.frontend(t, f, "", proto, nodePort, clusterEps)
				t.element(setNodePortMasq, []string{proto, nodePort})
			}
			summary += fmt.Sprintf("%d endpoints (%d local)", len(clusterEps), len(localEps))
			if itpLocal {
				summary += ", internal local"
			}
			if hasExternal {
				summary += ", external masquerade"
			}
			summaries = append(summaries, summary)
			continue
		}
		svcChain := chainName("svc", spid)
		b.pick(t, f, svcChain, spid, proto, clusterEps)
		localVerdict := "drop"
		if needLocal := itpLocal || (etpLocal && hasExternal); needLocal && len(localEps) > 0 {
			localChain := chainName("local", spid)
			b.pick(t, f, localChain, spid, proto, localEps)
			localVerdict = "goto " + localChain
		}
		clusterVerdict := "goto " + svcChain
		if itpLocal {
			clusterVerdict = localVerdict
		}
		for _, ip := range clusterIPs {
			t.element(mapServiceIPs, []string{ip.String(), proto, port}, clusterVerdict)
			t.element(setClusterIPs, []string{ip.String()})
		}
		summary += fmt.Sprintf("%d endpoints (%d local)", len(clusterEps), len(localEps))
		if itpLocal {
			summary += ", internal local"
		}
		if hasExternal {
			extChain := chainName("ext", spid)
			if etpLocal {
				t.chain(extChain,
					// Pods and the node itself reach an externalTrafficPolicy=Local Service like a
					// ClusterIP (kube-proxy's short circuit), so they work from nodes without endpoints.
					fmt.Sprintf("%s saddr @%s goto %s", f.ip, setPodCIDRs, svcChain),
					"fib saddr type local jump "+chainMarkMasq,
					"fib saddr type local goto "+svcChain,
					localVerdict)
				summary += ", external local"
			} else {
				t.chain(extChain, "jump "+chainMarkMasq, "goto "+svcChain)
				summary += ", external masquerade"
			}
			for _, ip := range externalIPs {
				t.element(mapServiceIPs, []string{ip.String(), proto, port}, "goto "+extChain)
			}
			lbVerdict := "goto " + extChain
			if len(b.fe.sourceRanges) > 0 && len(lbIPs) > 0 {
				fwChain := chainName("fw", spid)
				// One rule per range rather than an anonymous set: anonymous sets are what makes the
				// kernel slow at scale (see the package doc).
				var rules []string
				for _, r := range b.fe.sourceRanges {
					if f.is(r.Addr()) {
						rules = append(rules, fmt.Sprintf("%s saddr %s goto %s", f.ip, r, extChain))
					}
				}
				t.chain(fwChain, append(rules, "drop")...)
				lbVerdict = "goto " + fwChain
				summary += ", source ranges"
			}
			for _, ip := range lbIPs {
				t.element(mapServiceIPs, []string{ip.String(), proto, port}, lbVerdict)
			}
			if nodePort != "" {
				t.element(mapServiceNodePorts, []string{proto, nodePort}, "goto "+extChain)
			}
		}
		summaries = append(summaries, summary)
	}
	return summaries
}

// fast reports whether the Service takes the fast path: its endpoints are data (a slot per endpoint
// in frontend-endpoints or nodeport-endpoints) picked by a chain shared by every frontend with as
// many endpoints, so a change of endpoints changes only elements. Session affinity, source ranges
// and externalTrafficPolicy Local need per-Service rules, so those Services keep their own chains.
// internalTrafficPolicy Local fits: each frontend has its own endpoint list.
func (b *serviceBuilder) fast() bool {
	spec := &b.svc.Spec
	etpLocal := (spec.Type == corev1.ServiceTypeNodePort || spec.Type == corev1.ServiceTypeLoadBalancer) &&
		spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
	return spec.SessionAffinity != corev1.ServiceAffinityClientIP && len(b.fe.sourceRanges) == 0 && !etpLocal
}

// frontend adds one fast-path frontend (ip . proto . port, or proto . port for a NodePort when ip is
// ""): a slot element per endpoint, and the dispatch to the pick chain for their number, or a drop
// when there are none (internalTrafficPolicy Local without local endpoints).
func (b *serviceBuilder) frontend(t *Table, f family, ip, proto, port string, eps []target) {
	pk := pick{nodePort: ip == "", n: len(eps)}
	key := []string{proto, port}
	vmap, slots := mapServiceNodePorts, mapNodePortEndpoints
	if ip != "" {
		key = []string{ip, proto, port}
		vmap, slots = mapServiceIPs, mapFrontendEndpoints
	}
	if len(eps) == 0 {
		t.element(vmap, key, "drop")
		return
	}
	for i := range eps {
		var slot [4]string // on the stack: element keeps only the joined key
		n := copy(slot[:], key)
		slot[n] = strconv.Itoa(i)
		t.element(slots, slot[:n+1], eps[i].value()...)
	}
	t.element(vmap, key, "goto "+pk.chain())
	fi := familyIndex(f)
	if !slices.Contains(b.r.picks[fi], pk) {
		b.r.picks[fi] = append(b.r.picks[fi], pk)
	}
}

// pick names a fast-path pick chain: the random choice among n slots of an address frontend, or of a
// NodePort.
type pick struct {
	nodePort bool
	n        int
}

func (pk pick) chain() string {
	if pk.nodePort {
		return "nodeport-pick-" + strconv.Itoa(pk.n)
	}
	return "pick-" + strconv.Itoa(pk.n)
}

// rule is the pick chain's one rule. The modulus is a constant of the rule, hence a chain per n; the
// l4proto match is what lets nft map a transport port.
func (pk pick) rule(f family) string {
	if pk.nodePort {
		return fmt.Sprintf("meta l4proto { tcp, udp, sctp } dnat %s to meta l4proto . th dport . numgen random mod %d map @%s", f.ip, pk.n, mapNodePortEndpoints)
	}
	return fmt.Sprintf("meta l4proto { tcp, udp, sctp } dnat %s to %s daddr . meta l4proto . th dport . numgen random mod %d map @%s", f.ip, f.ip, pk.n, mapFrontendEndpoints)
}

func familyIndex(f family) int {
	if f.nft == knftables.IPv6Family {
		return 1
	}
	return 0
}

func protocolOf(sp corev1.ServicePort) corev1.Protocol {
	if sp.Protocol == "" {
		return corev1.ProtocolTCP
	}
	return sp.Protocol
}

// pick fills chain with the choice among eps: a random pick, remembered per client for ClientIP
// affinity.
//
// The random pick is a cascade of rules, the i-th taken with probability 1/(N-i) (numgen random mod
// N-i == 0), the last always, which gives each endpoint 1/N. It needs no set: an anonymous map per
// Service (kube-proxy's numgen vmap) costs the kernel a linear walk of every set of the table for each
// one added, and a shared map bound by every rule costs a walk of all bindings for each element;
// both make a 10k-Service table take tens of seconds to load. The cascade only runs for a
// connection's first packet (conntrack remembers the NAT), N/2 rules on average.
func (b *serviceBuilder) pick(t *Table, f family, chain, spid, proto string, eps []target) {
	verdicts := make([]string, len(eps))
	affinity := b.svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP
	timeout := int32(defaultAffinityTimeout)
	if c := b.svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
		timeout = *c.ClientIP.TimeoutSeconds
	}
	var rules []string
	for i, ep := range eps {
		verdicts[i] = fmt.Sprintf("meta l4proto %s dnat to %s", proto, ep)
		if !affinity {
			continue
		}
		id := spid + "__" + ep.String()
		epChain := chainName("ep", id)
		// The timeout is part of the set's name: a set's timeout cannot change in place.
		affSet := chainName("aff", fmt.Sprintf("%s/%ds", id, timeout))
		d := timeoutDuration(timeout)
		t.set(knftables.Set{Name: affSet, Type: f.addrType, Flags: []knftables.SetFlag{knftables.DynamicFlag, knftables.TimeoutFlag}, Timeout: &d})
		if t.Chains[epChain] == nil {
			t.chain(epChain, fmt.Sprintf("update @%s { %s saddr }", affSet, f.ip), verdicts[i])
		}
		rules = append(rules, fmt.Sprintf("%s saddr @%s goto %s", f.ip, affSet, epChain))
		verdicts[i] = "goto " + epChain
	}
	for i, v := range verdicts {
		if left := len(eps) - i; left > 1 {
			v = fmt.Sprintf("numgen random mod %d == 0 %s", left, v)
		}
		rules = append(rules, v)
	}
	t.chain(chain, rules...)
}

// endpoints returns the endpoints for cluster-wide and for node-local traffic on port sp, as
// kube-proxy chooses them: ready ones, else serving-and-terminating ones; the cluster-wide set
// narrowed to this zone when every endpoint carries topology hints, and stripped of endpoints on
// nodes the gossip declares dead unless that would leave none.
func (b *serviceBuilder) endpoints(f family, sp corev1.ServicePort) (clusterEps, localEps []target) {
	all := make([]candidate, 0, len(b.svc.Endpoints))
	for i := range b.svc.Endpoints {
		ep := &b.svc.Endpoints[i]
		if !f.is(ep.Addr) {
			continue
		}
		port, ok := ep.Port(sp.Name, protocolOf(sp))
		if !ok {
			continue
		}
		all = append(all, candidate{ep, target{addr: ep.Addr, port: port}})
	}
	choose := func(keep func(*cluster.Endpoint) bool) []candidate {
		ready := make([]candidate, 0, len(all))
		var terminating []candidate
		for _, c := range all {
			switch {
			case !keep(c.ep):
			case c.ep.Ready:
				ready = append(ready, c)
			case c.ep.Serving && c.ep.Terminating:
				terminating = append(terminating, c)
			}
		}
		if len(ready) > 0 {
			return ready
		}
		return terminating
	}
	narrow := func(in []candidate, keep func(*cluster.Endpoint) bool) []candidate {
		out := make([]candidate, 0, len(in))
		for _, c := range in {
			if keep(c.ep) {
				out = append(out, c)
			}
		}
		if len(out) == 0 {
			return in
		}
		return out
	}
	cl := choose(func(*cluster.Endpoint) bool { return true })
	cl = narrow(cl, func(ep *cluster.Endpoint) bool { return ep.NodeName == "" || b.snap.NodeLive(ep.NodeName) })
	if b.zone != "" && allHinted(cl) {
		cl = narrow(cl, func(ep *cluster.Endpoint) bool { return contains(ep.ZoneHints, b.zone) })
	}
	loc := choose(func(ep *cluster.Endpoint) bool { return ep.NodeName == b.snap.NodeName })
	clusterEps = make([]target, 0, len(cl))
	for _, c := range cl {
		clusterEps = append(clusterEps, c.t)
	}
	for _, c := range loc {
		localEps = append(localEps, c.t)
	}
	return clusterEps, localEps
}

func allHinted(in []candidate) bool {
	for _, c := range in {
		if len(c.ep.ZoneHints) == 0 {
			return false
		}
	}
	return len(in) > 0
}

func timeoutDuration(seconds int32) time.Duration { return time.Duration(seconds) * time.Second }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// recordUDP notes which endpoints each UDP frontend may reach, for conntrack clean-up.
func (b *serviceBuilder) recordUDP(sp corev1.ServicePort, proto, port, nodePort string, clusterIPs, externalIPs, lbIPs []netip.Addr, clusterEps, localEps []target) {
	if protocolOf(sp) != corev1.ProtocolUDP {
		return
	}
	eps := map[string]bool{}
	for _, ep := range append(clusterEps, localEps...) {
		eps[ep.String()] = true
	}
	add := func(key string) {
		if b.r.udp[key] == nil {
			b.r.udp[key] = map[string]bool{}
		}
		for e := range eps {
			b.r.udp[key][e] = true
		}
	}
	for _, ips := range [][]netip.Addr{clusterIPs, externalIPs, lbIPs} {
		for _, ip := range ips {
			add(udpFrontend(ip.String(), port))
		}
	}
	if nodePort != "" {
		add(udpFrontend("", nodePort))
	}
}

// udpFrontend names a UDP frontend: ip:port, or :port for a NodePort (any local address).
func udpFrontend(ip, port string) string {
	if strings.Contains(ip, ":") {
		ip = "[" + ip + "]"
	}
	return ip + ":" + port
}

// chainName gives a chain or set for id a name nft accepts: a hash for uniqueness, then as much of
// id as fits for readers.
func chainName(kind, id string) string {
	sum := sha256.Sum256([]byte(kind + "|" + id))
	h := base32.StdEncoding.EncodeToString(sum[:])[:8]
	readable := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '/', r == '.', r == '_':
			return r
		}
		return '.'
	}, id)
	if max := 200; len(readable) > max {
		readable = readable[:max]
	}
	return kind + "-" + h + "-" + readable
}
