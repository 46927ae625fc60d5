package allocator

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"net/netip"
	"slices"
	"strings"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// ExternalIPsAnnotation on an IPAddressPool marks its addresses as announceable when a Service lists
// them in spec.externalIPs. MetalLB has no such notion, so the pool stays valid for MetalLB too; set
// autoAssign: false on it as well if its addresses should only ever be used as external IPs.
const ExternalIPsAnnotation = "baregate.io/external-ips"

// Range is an inclusive span of addresses of one family.
type Range struct {
	From, To netip.Addr
}

// Contains reports whether ip lies in r.
func (r Range) Contains(ip netip.Addr) bool {
	return r.From.Compare(ip) <= 0 && ip.Compare(r.To) <= 0
}

// String prints r as MetalLB users write it.
func (r Range) String() string {
	return r.From.String() + "-" + r.To.String()
}

// Pool is a parsed IPAddressPool.
type Pool struct {
	Name string
	// Ranges are the pool's addresses, sorted and without overlaps.
	Ranges []Range
	// AutoAssign lets Services that ask for no particular pool or IP get addresses from the pool.
	AutoAssign bool
	// AvoidBuggyIPs leaves out IPv4 addresses ending in .0 or .255, which some CPE firmware drops.
	AvoidBuggyIPs bool
	// ExternalIPs is set by ExternalIPsAnnotation.
	ExternalIPs bool

	// Restricted is set when the pool has a serviceAllocation: it then serves only the Services it
	// selects, before any unrestricted pool, in Priority order.
	Restricted bool
	// Priority orders restricted pools: lower first, 0 (unset) last.
	Priority           int
	namespaces         []string
	namespaceSelectors []labels.Selector
	serviceSelectors   []labels.Selector

	// Object is the IPAddressPool the pool was parsed from.
	Object *metallbv1beta1.IPAddressPool
}

// ParsePool parses an IPAddressPool, refusing the whole pool on any bad address or selector so that
// a typo never hands out addresses the administrator did not mean to give.
func ParsePool(obj *metallbv1beta1.IPAddressPool) (*Pool, error) {
	p := &Pool{
		Name:          obj.Name,
		AutoAssign:    obj.Spec.AutoAssign == nil || *obj.Spec.AutoAssign,
		AvoidBuggyIPs: obj.Spec.AvoidBuggyIPs,
		ExternalIPs:   obj.Annotations[ExternalIPsAnnotation] == "true",
		Object:        obj,
	}
	if len(obj.Spec.Addresses) == 0 {
		return nil, errors.New("pool has no addresses")
	}
	for _, a := range obj.Spec.Addresses {
		r, err := ParseRange(a)
		if err != nil {
			return nil, err
		}
		p.Ranges = append(p.Ranges, r)
	}
	slices.SortFunc(p.Ranges, func(a, b Range) int { return a.From.Compare(b.From) })
	for i := 1; i < len(p.Ranges); i++ {
		if p.Ranges[i-1].To.Compare(p.Ranges[i].From) >= 0 && p.Ranges[i-1].From.Is4() == p.Ranges[i].From.Is4() {
			return nil, fmt.Errorf("addresses %s and %s overlap", p.Ranges[i-1], p.Ranges[i])
		}
	}
	if sa := obj.Spec.AllocateTo; sa != nil {
		p.Restricted = true
		if sa.Priority < 0 {
			return nil, fmt.Errorf("serviceAllocation.priority %d is negative", sa.Priority)
		}
		p.Priority = sa.Priority
		p.namespaces = slices.Clone(sa.Namespaces)
		var err error
		if p.namespaceSelectors, err = selectors(sa.NamespaceSelectors); err != nil {
			return nil, fmt.Errorf("serviceAllocation.namespaceSelectors: %w", err)
		}
		if p.serviceSelectors, err = selectors(sa.ServiceSelectors); err != nil {
			return nil, fmt.Errorf("serviceAllocation.serviceSelectors: %w", err)
		}
	}
	return p, nil
}

func selectors(in []metav1.LabelSelector) ([]labels.Selector, error) {
	out := make([]labels.Selector, 0, len(in))
	for i := range in {
		s, err := metav1.LabelSelectorAsSelector(&in[i])
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// ParseRange parses one entry of an IPAddressPool's addresses: a CIDR ("203.0.113.0/24", host bits
// ignored as MetalLB does), a range ("203.0.113.10-203.0.113.20", spaces allowed) or a single address.
func ParseRange(s string) (Range, error) {
	s = strings.TrimSpace(s)
	if from, to, ok := strings.Cut(s, "-"); ok {
		a, err := parseAddr(from)
		if err != nil {
			return Range{}, fmt.Errorf("range %q: %w", s, err)
		}
		b, err := parseAddr(to)
		if err != nil {
			return Range{}, fmt.Errorf("range %q: %w", s, err)
		}
		if a.Is4() != b.Is4() {
			return Range{}, fmt.Errorf("range %q mixes IPv4 and IPv6", s)
		}
		if a.Compare(b) > 0 {
			return Range{}, fmt.Errorf("range %q starts after it ends", s)
		}
		return Range{From: a, To: b}, nil
	}
	if strings.Contains(s, "/") {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return Range{}, fmt.Errorf("CIDR %q: %w", s, err)
		}
		if pfx.Addr().Is4In6() {
			return Range{}, fmt.Errorf("CIDR %q: IPv4-mapped IPv6 prefixes are not supported", s)
		}
		pfx = pfx.Masked()
		return Range{From: pfx.Addr(), To: lastAddr(pfx)}, nil
	}
	a, err := parseAddr(s)
	if err != nil {
		return Range{}, err
	}
	return Range{From: a, To: a}, nil
}

func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("bad address: %w", err)
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("address %s has a zone", a)
	}
	return a.Unmap(), nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := range b {
		hostBits := max(0, min(8, (i+1)*8-p.Bits()))
		b[i] |= byte(1<<hostBits - 1)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Contains reports whether the pool may hand out ip (AvoidBuggyIPs taken into account).
func (p *Pool) Contains(ip netip.Addr) bool {
	ip = ip.Unmap()
	if p.AvoidBuggyIPs && buggy(ip) {
		return false
	}
	for _, r := range p.Ranges {
		if r.Contains(ip) {
			return true
		}
	}
	return false
}

// Serves reports whether the pool's serviceAllocation admits svc, whose namespace is ns (nil when
// unknown: then only the namespaces list can admit it).
func (p *Pool) Serves(svc *corev1.Service, ns *corev1.Namespace) bool {
	if !p.Restricted {
		return true
	}
	if len(p.namespaces) > 0 || len(p.namespaceSelectors) > 0 {
		ok := slices.Contains(p.namespaces, svc.Namespace)
		if !ok && ns != nil {
			for _, s := range p.namespaceSelectors {
				if s.Matches(labels.Set(ns.Labels)) {
					ok = true
					break
				}
			}
		}
		if !ok {
			return false
		}
	}
	if len(p.serviceSelectors) == 0 {
		return true
	}
	for _, s := range p.serviceSelectors {
		if s.Matches(labels.Set(svc.Labels)) {
			return true
		}
	}
	return false
}

// PoolFor returns the first pool that contains ip, or nil.
func PoolFor(pools []*Pool, ip netip.Addr) *Pool {
	for _, p := range pools {
		if p.Contains(ip) {
			return p
		}
	}
	return nil
}

// ParsePools parses every pool, sorted by name, and returns the errors of those it had to refuse
// (bad addresses, or addresses overlapping an earlier pool's) by pool name.
func ParsePools(objs []*metallbv1beta1.IPAddressPool) ([]*Pool, map[string]error) {
	objs = slices.Clone(objs)
	slices.SortFunc(objs, func(a, b *metallbv1beta1.IPAddressPool) int { return strings.Compare(a.Name, b.Name) })
	var pools []*Pool
	errs := map[string]error{}
	for _, obj := range objs {
		p, err := ParsePool(obj)
		if err == nil {
			err = overlap(pools, p)
		}
		if err != nil {
			errs[obj.Name] = err
			continue
		}
		pools = append(pools, p)
	}
	return pools, errs
}

func overlap(pools []*Pool, p *Pool) error {
	for _, q := range pools {
		for _, a := range q.Ranges {
			for _, b := range p.Ranges {
				if a.From.Is4() == b.From.Is4() && a.From.Compare(b.To) <= 0 && b.From.Compare(a.To) <= 0 {
					return fmt.Errorf("addresses %s overlap %s of pool %s", b, a, q.Name)
				}
			}
		}
	}
	return nil
}

// buggy reports an IPv4 address ending in .0 or .255.
func buggy(ip netip.Addr) bool {
	if !ip.Is4() {
		return false
	}
	last := ip.As4()[3]
	return last == 0 || last == 255
}

// capacity returns how many addresses of each family the pool can hand out, saturating at MaxInt64.
func (p *Pool) capacity() (v4, v6 int64) {
	for _, r := range p.Ranges {
		n := rangeSize(r)
		if r.From.Is4() {
			if p.AvoidBuggyIPs {
				n -= buggyIn(r)
			}
			v4 = satAdd(v4, n)
		} else {
			v6 = satAdd(v6, n)
		}
	}
	return v4, v6
}

func rangeSize(r Range) int64 {
	a := new(big.Int).SetBytes(r.From.AsSlice())
	b := new(big.Int).SetBytes(r.To.AsSlice())
	n := b.Sub(b, a).Add(b, big.NewInt(1))
	if !n.IsInt64() {
		return math.MaxInt64
	}
	return n.Int64()
}

// buggyIn counts the .0 and .255 addresses of an IPv4 range.
func buggyIn(r Range) int64 {
	a, b := r.From.As4(), r.To.As4()
	lo := int64(a[0])<<24 | int64(a[1])<<16 | int64(a[2])<<8 | int64(a[3])
	hi := int64(b[0])<<24 | int64(b[1])<<16 | int64(b[2])<<8 | int64(b[3])
	// upTo(x) counts the addresses in [0, x] that end in .0 or .255.
	upTo := func(x int64) int64 {
		if x < 0 {
			return 0
		}
		n := 2 * (x / 256)
		n++ // x/256 * 256 ends in .0
		if x%256 == 255 {
			n++
		}
		return n
	}
	return upTo(hi) - upTo(lo-1)
}

func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}
