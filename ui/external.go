package ui

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/baregate/baregate/internal/cluster"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// AddressPoolAnnotation asks MetalLB (and baregate) for an IP from a named pool.
const AddressPoolAnnotation = "metallb.io/address-pool"

type externalIP struct {
	addr     string
	kind     string
	services []types.NamespacedName
	pending  bool
	pool     string // from the Service annotation, when set
}

// addExternalIPs adds the IPs through which traffic enters Services (allocated LoadBalancer IPs,
// pending allocations and spec.externalIPs) and returns the LB IP table.
func addExternalIPs(g *graph, snap *cluster.Snapshot, live Live, svcHealth map[types.NamespacedName]Health) []LBIPRow {
	ips := map[string]*externalIP{}
	add := func(addr, kind string, svc *cluster.Service, pending bool) {
		id := "ip:" + addr
		if pending {
			id = "ip:pending:" + svc.Key().String()
		}
		e := ips[id]
		if e == nil {
			e = &externalIP{addr: addr, kind: kind, pending: pending, pool: svc.Annotations[AddressPoolAnnotation]}
			ips[id] = e
		}
		if !slices.Contains(e.services, svc.Key()) {
			e.services = append(e.services, svc.Key())
		}
	}
	for _, svc := range snap.Services {
		if svc.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		if cluster.IsOurLoadBalancer(svc.Service) {
			n := 0
			for _, ing := range svc.Status.LoadBalancer.Ingress {
				if ing.IP != "" {
					add(canonicalIP(ing.IP), "LoadBalancer", svc, false)
					n++
				}
			}
			if n == 0 {
				add("pending", "LoadBalancer", svc, true)
			}
		}
		for _, ip := range svc.Spec.ExternalIPs {
			add(canonicalIP(ip), "ExternalIP", svc, false)
		}
	}

	announced := map[string]cluster.Announcement{}
	for _, a := range live.Announcements {
		announced[a.IP.String()] = a
	}
	var rows []LBIPRow
	for id, e := range ips {
		row := LBIPRow{IP: e.addr, Kind: e.kind, Pool: e.pool}
		ns := ""
		for i, k := range e.services {
			row.Services = append(row.Services, k.String())
			if i == 0 || ns == k.Namespace {
				ns = k.Namespace
			} else {
				ns = ""
			}
		}
		n := g.node(Node{ID: id, Kind: KindIP, Label: e.addr, Namespace: ns, Health: HealthOK})
		a, isAnnounced := announced[e.addr]
		switch {
		case e.pending:
			n.Label, n.Health, row.Status = "pending IP", HealthPending, "waiting for an address"
		case isAnnounced:
			row.Pool = cmp.Or(a.Pool, row.Pool)
			if a.Node == "" {
				n.Health, row.Status = HealthDown, "no eligible node"
			} else {
				row.Owner, row.Status = a.Node, "announced"
				if !a.Since.IsZero() {
					since := a.Since
					row.Since = &since
				}
			}
		case e.kind == "ExternalIP":
			row.Status = "routed to the nodes by the network"
		case live.Announcements == nil:
			row.Status = "owner unknown (lbip off here)"
		default:
			n.Health, row.Status = HealthDown, "not announced"
		}
		if row.Pool == "" && !e.pending {
			row.Pool = poolOf(e.addr, snap.Pools)
		}
		n.Sub = row.Status
		if row.Owner != "" {
			n.Sub = "via " + row.Owner
		}
		n.Fields = ipFields(row, a)
		for _, k := range e.services {
			label := ""
			if svc := snap.Service(k); svc != nil {
				label = portsLabel(svc.Spec.Ports)
			}
			g.edge(id, serviceID(k), label)
		}
		rows = append(rows, row)
	}
	slices.SortFunc(rows, func(a, b LBIPRow) int {
		return cmp.Or(compareIPs(a.IP, b.IP), strings.Compare(strings.Join(a.Services, ","), strings.Join(b.Services, ",")))
	})
	return rows
}

func ipFields(row LBIPRow, a cluster.Announcement) []Field {
	f := []Field{{"Kind", row.Kind}, {"Services", strings.Join(row.Services, ", ")}, {"Status", row.Status}}
	if row.Pool != "" {
		f = append(f, Field{"Pool", row.Pool})
	}
	if row.Owner != "" {
		f = append(f, Field{"Announced by", row.Owner})
	}
	if row.Since != nil {
		f = append(f, Field{"Owner since", row.Since.UTC().Format(time.RFC3339)})
	}
	if len(a.Interfaces) > 0 {
		f = append(f, Field{"Interfaces", strings.Join(a.Interfaces, ", ")})
	}
	return f
}

func portsLabel(ports []corev1.ServicePort) string {
	var parts []string
	for _, p := range ports {
		parts = append(parts, fmt.Sprintf("%d/%s", p.Port, cmp.Or(p.Protocol, corev1.ProtocolTCP)))
	}
	return strings.Join(parts, ", ")
}

func canonicalIP(s string) string {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().String()
	}
	return s
}

func compareIPs(a, b string) int {
	pa, errA := netip.ParseAddr(a)
	pb, errB := netip.ParseAddr(b)
	if errA != nil || errB != nil {
		return strings.Compare(a, b)
	}
	return pa.Compare(pb)
}

// poolOf names the MetalLB pool whose addresses hold ip, or "" when none does.
func poolOf(ip string, pools []*metallbv1beta1.IPAddressPool) string {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return ""
	}
	for _, p := range pools {
		for _, r := range p.Spec.Addresses {
			first, last, err := ParsePoolRange(r)
			if err == nil && first.Compare(addr) <= 0 && addr.Compare(last) <= 0 && first.Is4() == addr.Is4() {
				return p.Name
			}
		}
	}
	return ""
}

// ParsePoolRange parses one entry of an IPAddressPool's spec.addresses, a CIDR or a "first-last"
// range, into its first and last address.
func ParsePoolRange(s string) (first, last netip.Addr, err error) {
	s = strings.TrimSpace(s)
	if from, to, ok := strings.Cut(s, "-"); ok {
		first, err = netip.ParseAddr(strings.TrimSpace(from))
		if err != nil {
			return first, last, fmt.Errorf("parsing the start of range %q: %w", s, err)
		}
		last, err = netip.ParseAddr(strings.TrimSpace(to))
		if err != nil {
			return first, last, fmt.Errorf("parsing the end of range %q: %w", s, err)
		}
		first, last = first.Unmap(), last.Unmap()
		if first.Is4() != last.Is4() || last.Less(first) || first.Zone() != "" || last.Zone() != "" {
			return first, last, fmt.Errorf("range %q is not a same-family ascending address range", s)
		}
		return first, last, nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return first, last, fmt.Errorf("parsing pool address %q as a CIDR or range: %w", s, err)
	}
	p = p.Masked()
	first = p.Addr()
	last = first
	bits := first.BitLen() - p.Bits()
	b := last.AsSlice()
	for i := len(b) - 1; i >= 0 && bits > 0; i-- {
		n := min(bits, 8)
		b[i] |= byte(1<<n - 1)
		bits -= n
	}
	last, _ = netip.AddrFromSlice(b)
	return first, last, nil
}
