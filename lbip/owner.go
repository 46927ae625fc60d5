package lbip

import (
	"crypto/sha256"
	"net/netip"
	"slices"
	"strings"

	"github.com/baregate/baregate/internal/cluster"
	"github.com/baregate/baregate/lbip/allocator"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
)

// ExcludeFromLBLabel on a Node keeps it from announcing any load-balancer IP, as in MetalLB and
// the cloud providers.
const ExcludeFromLBLabel = "node.kubernetes.io/exclude-from-external-load-balancers"

// Assignment is the owner function's verdict for one external IP.
type Assignment struct {
	IP       netip.Addr
	Services []types.NamespacedName
	// Pool is the IPAddressPool holding IP; empty when none does (the IP is then not announced).
	Pool string
	// Node announces IP; empty when no live node is eligible.
	Node string
	// Interfaces restricts announcing on Node to these interfaces (from its L2Advertisements);
	// nil means the announcer's default interfaces.
	Interfaces []string
	// Why says, when Node is empty, what left no candidate.
	Why string
}

// Owners maps every announced IP to the node that announces it (IPs with no eligible node are left out).
func Owners(snap *cluster.Snapshot, live map[string]bool) map[netip.Addr]string {
	out := map[netip.Addr]string{}
	for _, a := range Assign(snap, live) {
		if a.Node != "" {
			out[a.IP] = a.Node
		}
	}
	return out
}

// Assign decides, for each load-balancer ingress IP of baregate's Services and each externalIP in a
// pool marked with ExternalIPsAnnotation, which live node announces it. Every node computes the same
// answer from the same inputs, so no coordination beyond the gossip's member list is needed. live
// nil means every Node counts as live (no gossip view yet). The result is sorted by IP.
func Assign(snap *cluster.Snapshot, live map[string]bool) []Assignment {
	pools := newPoolIndex(snap.Pools)
	users := ipUsers(snap, pools)
	ips := make([]netip.Addr, 0, len(users))
	for ip := range users {
		ips = append(ips, ip)
	}
	slices.SortFunc(ips, netip.Addr.Compare)

	nodes := liveNodes(snap, live)
	out := make([]Assignment, 0, len(ips))
	for _, ip := range ips {
		svcs := users[ip]
		a := Assignment{IP: ip}
		for _, s := range svcs {
			a.Services = append(a.Services, s.Key())
		}
		pool := pools.poolFor(ip)
		if pool == nil {
			a.Why = "IP is in no IPAddressPool"
			out = append(out, a)
			continue
		}
		a.Pool = pool.Name
		advs := advertisementsFor(snap.L2Advertisements, pool)
		if len(advs) == 0 {
			a.Why = "no L2Advertisement selects pool " + pool.Name
			out = append(out, a)
			continue
		}
		var candidates []string
		for _, n := range nodes {
			if _, ok := nodeInterfaces(advs, n); ok && servesAll(svcs, n.Name) {
				candidates = append(candidates, n.Name)
			}
		}
		if len(candidates) == 0 {
			a.Why = "no live node is eligible (L2Advertisement node selectors, excluded nodes, externalTrafficPolicy Local endpoints)"
			out = append(out, a)
			continue
		}
		a.Node = pickNode(candidates, ip)
		a.Interfaces, _ = nodeInterfaces(advs, snap.Nodes[a.Node])
		out = append(out, a)
	}
	return out
}

// ipUsers collects which Services use each announced IP.
func ipUsers(snap *cluster.Snapshot, pools *poolIndex) map[netip.Addr][]*cluster.Service {
	users := map[netip.Addr][]*cluster.Service{}
	add := func(s string, svc *cluster.Service) {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return
		}
		ip = ip.Unmap()
		if list := users[ip]; len(list) == 0 || list[len(list)-1] != svc {
			users[ip] = append(list, svc)
		}
	}
	for _, svc := range snap.Services {
		if cluster.IsOurLoadBalancer(svc.Service) {
			for _, ing := range svc.Status.LoadBalancer.Ingress {
				add(ing.IP, svc)
			}
		}
		for _, s := range svc.Spec.ExternalIPs {
			ip, err := netip.ParseAddr(s)
			if err != nil {
				continue
			}
			if p := pools.poolFor(ip.Unmap()); p != nil && p.Annotations[allocator.ExternalIPsAnnotation] == "true" {
				add(s, svc)
			}
		}
	}
	return users
}

// liveNodes returns the Nodes whose gateway is live and which are not excluded from load balancing,
// sorted by name. A live member without a Node object is skipped: its labels are unknown.
func liveNodes(snap *cluster.Snapshot, live map[string]bool) []*corev1.Node {
	var out []*corev1.Node
	for name, n := range snap.Nodes {
		if live != nil && !live[name] {
			continue
		}
		if _, excluded := n.Labels[ExcludeFromLBLabel]; excluded {
			continue
		}
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b *corev1.Node) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// advertisementsFor returns the L2Advertisements that select pool: by name, by label selector, or
// by selecting no pool at all (which MetalLB reads as every pool).
func advertisementsFor(advs []*metallbv1beta1.L2Advertisement, pool *metallbv1beta1.IPAddressPool) []*metallbv1beta1.L2Advertisement {
	var out []*metallbv1beta1.L2Advertisement
	for _, adv := range advs {
		if len(adv.Spec.IPAddressPools) == 0 && len(adv.Spec.IPAddressPoolSelectors) == 0 ||
			slices.Contains(adv.Spec.IPAddressPools, pool.Name) ||
			anySelects(adv.Spec.IPAddressPoolSelectors, pool.Labels) {
			out = append(out, adv)
		}
	}
	return out
}

// nodeInterfaces reports whether any of advs selects node and on which interfaces it may announce:
// the union of the selecting advertisements' interfaces, nil when one of them allows all.
func nodeInterfaces(advs []*metallbv1beta1.L2Advertisement, node *corev1.Node) ([]string, bool) {
	var ifaces []string
	selected, all := false, false
	for _, adv := range advs {
		if len(adv.Spec.NodeSelectors) > 0 && !anySelects(adv.Spec.NodeSelectors, node.Labels) {
			continue
		}
		selected = true
		if len(adv.Spec.Interfaces) == 0 {
			all = true
		}
		ifaces = append(ifaces, adv.Spec.Interfaces...)
	}
	if !selected || all {
		return nil, selected
	}
	slices.Sort(ifaces)
	return slices.Compact(ifaces), true
}

// anySelects reports whether one of sels matches set. A malformed selector matches nothing: the API
// server's CRD validation lets few through, and announcing from a node the user did not mean is worse
// than not announcing.
func anySelects(sels []metav1.LabelSelector, set map[string]string) bool {
	for i := range sels {
		sel, err := metav1.LabelSelectorAsSelector(&sels[i])
		if err != nil {
			continue
		}
		if sel.Matches(labels.Set(set)) {
			return true
		}
	}
	return false
}

// servesAll reports whether node may announce for every Service sharing the IP: with
// externalTrafficPolicy Local only a node with a local endpoint can, or traffic would be dropped.
func servesAll(svcs []*cluster.Service, node string) bool {
	for _, svc := range svcs {
		if svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal && !hasLocalEndpoint(svc, node) {
			return false
		}
	}
	return true
}

// hasLocalEndpoint reports whether node hosts a ready endpoint of svc or, when no endpoint of svc is
// ready anywhere, a serving terminating one (the endpoints kube-proxy would then use).
func hasLocalEndpoint(svc *cluster.Service, node string) bool {
	anyReady := slices.ContainsFunc(svc.Endpoints, func(e cluster.Endpoint) bool { return e.Ready })
	for _, e := range svc.Endpoints {
		if e.NodeName != node {
			continue
		}
		if e.Ready || !anyReady && e.Serving && e.Terminating {
			return true
		}
	}
	return false
}

// pickNode chooses among candidates by hashing each with the IP and taking the smallest, as MetalLB
// does: IPs spread over nodes, and an IP moves only when its own owner leaves or a node hashing lower
// joins, not when unrelated nodes come and go.
func pickNode(candidates []string, ip netip.Addr) string {
	best, bestSum := "", [sha256.Size]byte{}
	for _, n := range candidates {
		sum := sha256.Sum256([]byte(n + "#" + ip.String()))
		if best == "" || string(sum[:]) < string(bestSum[:]) || sum == bestSum && n < best {
			best, bestSum = n, sum
		}
	}
	return best
}
