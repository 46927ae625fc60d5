package allocator

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// MetalLB's Service annotations, honoured as MetalLB does (including its deprecated prefix).
const (
	AnnotationLoadBalancerIPs = "metallb.io/loadBalancerIPs"
	AnnotationAddressPool     = "metallb.io/address-pool"
	AnnotationAllowSharedIP   = "metallb.io/allow-shared-ip"

	deprecatedPrefix = "metallb.universe.tf/"
)

func annotation(svc *corev1.Service, name string) (string, bool) {
	if v, ok := svc.Annotations[name]; ok {
		return v, true
	}
	_, suffix, _ := strings.Cut(name, "/")
	v, ok := svc.Annotations[deprecatedPrefix+suffix]
	return v, ok
}

// ParseLoadBalancerIPs parses the metallb.io/loadBalancerIPs annotation: a comma-separated list of
// at most one address per family.
func ParseLoadBalancerIPs(s string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, f := range strings.Split(s, ",") {
		ip, err := parseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", AnnotationLoadBalancerIPs, s, err)
		}
		for _, o := range out {
			if o.Is4() == ip.Is4() {
				return nil, fmt.Errorf("%s %q: more than one address of the same family", AnnotationLoadBalancerIPs, s)
			}
		}
		out = append(out, ip)
	}
	return out, nil
}

// request is what a Service asks of the allocator.
type request struct {
	// families wanted, primary first; required is how many of them must be granted (all for
	// SingleStack and RequireDualStack, one for PreferDualStack).
	families []family
	required int
	// ips are the addresses asked for by spec.loadBalancerIP or the annotation, one per family.
	ips  []netip.Addr
	pool string
	// sharing and backend are MetalLB's sharing and backend keys: Services may share an IP only if
	// both are equal and non-empty sharing keys, and their ports do not clash.
	sharing, backend string
	ports            []port
	// err is a bad annotation or request; the Service then keeps what it holds but gets nothing new.
	err error
}

type family bool

const (
	v4 family = true
	v6 family = false
)

func familyOf(ip netip.Addr) family { return family(ip.Is4()) }

func (f family) String() string {
	if f == v4 {
		return "IPv4"
	}
	return "IPv6"
}

type port struct {
	proto corev1.Protocol
	port  int32
}

func parseRequest(svc *corev1.Service) request {
	r := request{
		families: families(svc),
		sharing:  sharingKey(svc),
		backend:  backendKey(svc),
	}
	r.required = len(r.families)
	if len(r.families) == 2 && svc.Spec.IPFamilyPolicy != nil && *svc.Spec.IPFamilyPolicy == corev1.IPFamilyPolicyPreferDualStack {
		r.required = 1
	}
	for _, p := range svc.Spec.Ports {
		proto := p.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		r.ports = append(r.ports, port{proto: proto, port: p.Port})
	}
	r.pool, _ = annotation(svc, AnnotationAddressPool)
	r.pool = strings.TrimSpace(r.pool)
	r.ips, r.err = requestedIPs(svc, r.families)
	return r
}

func requestedIPs(svc *corev1.Service, fams []family) ([]netip.Addr, error) {
	ann, hasAnn := annotation(svc, AnnotationLoadBalancerIPs)
	var ips []netip.Addr
	switch {
	case hasAnn && svc.Spec.LoadBalancerIP != "":
		return nil, fmt.Errorf("both spec.loadBalancerIP and %s are set", AnnotationLoadBalancerIPs)
	case hasAnn:
		var err error
		if ips, err = ParseLoadBalancerIPs(ann); err != nil {
			return nil, err
		}
	case svc.Spec.LoadBalancerIP != "":
		ip, err := parseAddr(svc.Spec.LoadBalancerIP)
		if err != nil {
			return nil, fmt.Errorf("spec.loadBalancerIP %q: %w", svc.Spec.LoadBalancerIP, err)
		}
		ips = []netip.Addr{ip}
	default:
		return nil, nil
	}
	for _, ip := range ips {
		if !slices.Contains(fams, familyOf(ip)) {
			return nil, fmt.Errorf("requested %s is %s but the Service's ipFamilies are %v", ip, familyOf(ip), svc.Spec.IPFamilies)
		}
	}
	// Order the request as the Service orders its families, so status lists the primary first.
	slices.SortStableFunc(ips, func(a, b netip.Addr) int {
		return slices.Index(fams, familyOf(a)) - slices.Index(fams, familyOf(b))
	})
	return ips, nil
}

// families returns the address families the Service wants, primary first: spec.ipFamilies as the
// API server set it, else the families of its cluster IPs, else IPv4.
func families(svc *corev1.Service) []family {
	var out []family
	add := func(f family) {
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	for _, f := range svc.Spec.IPFamilies {
		add(family(f == corev1.IPv4Protocol))
	}
	if len(out) == 0 {
		for _, s := range svc.Spec.ClusterIPs {
			if ip, err := netip.ParseAddr(s); err == nil {
				add(familyOf(ip.Unmap()))
			}
		}
	}
	if len(out) == 0 {
		out = []family{v4}
	}
	if svc.Spec.IPFamilyPolicy == nil || *svc.Spec.IPFamilyPolicy == corev1.IPFamilyPolicySingleStack {
		out = out[:1]
	}
	return out
}

func sharingKey(svc *corev1.Service) string {
	v, _ := annotation(svc, AnnotationAllowSharedIP)
	return v
}

// backendKey tells whether two Services may share an IP traffic-wise: Cluster-policy Services
// always can; Local-policy ones only with Services selecting the same pods, because one node
// announces the shared IP and it must hold endpoints of all of them.
func backendKey(svc *corev1.Service) string {
	if svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal {
		return "Local:" + labels.Set(svc.Spec.Selector).String()
	}
	return ""
}
