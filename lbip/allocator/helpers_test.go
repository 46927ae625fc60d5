package allocator

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/baregate/baregate/internal/cluster"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// mkSvc builds a single-stack IPv4 LoadBalancer Service created age minutes after epoch, with one
// TCP port 80, then applies opts.
func mkSvc(ns, name string, age int, opts ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(ns + "/" + name),
			CreationTimestamp: metav1.NewTime(epoch.Add(time.Duration(age) * time.Minute))},
		Spec: corev1.ServiceSpec{
			Type:           corev1.ServiceTypeLoadBalancer,
			IPFamilies:     []corev1.IPFamily{corev1.IPv4Protocol},
			IPFamilyPolicy: ptr.To(corev1.IPFamilyPolicySingleStack),
			Ports:          []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}},
		},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

func withStatus(ips ...string) func(*corev1.Service) {
	return func(s *corev1.Service) {
		for _, ip := range ips {
			s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
		}
	}
}

func withAnn(k, v string) func(*corev1.Service) {
	return func(s *corev1.Service) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[k] = v
	}
}

func withLabel(k, v string) func(*corev1.Service) {
	return func(s *corev1.Service) {
		if s.Labels == nil {
			s.Labels = map[string]string{}
		}
		s.Labels[k] = v
	}
}

func withLBIP(ip string) func(*corev1.Service) {
	return func(s *corev1.Service) { s.Spec.LoadBalancerIP = ip }
}

func withPorts(ports ...int32) func(*corev1.Service) {
	return func(s *corev1.Service) {
		s.Spec.Ports = nil
		for _, p := range ports {
			s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Port: p, Protocol: corev1.ProtocolTCP})
		}
	}
}

func withFamilies(policy corev1.IPFamilyPolicy, fams ...corev1.IPFamily) func(*corev1.Service) {
	return func(s *corev1.Service) {
		s.Spec.IPFamilyPolicy = &policy
		s.Spec.IPFamilies = fams
	}
}

func withLocal(selector map[string]string) func(*corev1.Service) {
	return func(s *corev1.Service) {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		s.Spec.Selector = selector
	}
}

func withClass(c string) func(*corev1.Service) {
	return func(s *corev1.Service) { s.Spec.LoadBalancerClass = &c }
}

func mkPool(name string, addrs []string, opts ...func(*metallbv1beta1.IPAddressPool)) *metallbv1beta1.IPAddressPool {
	p := &metallbv1beta1.IPAddressPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: "metallb-system", Name: name},
		Spec:       metallbv1beta1.IPAddressPoolSpec{Addresses: addrs},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func noAuto(p *metallbv1beta1.IPAddressPool)     { p.Spec.AutoAssign = ptr.To(false) }
func avoidBuggy(p *metallbv1beta1.IPAddressPool) { p.Spec.AvoidBuggyIPs = true }
func forExternal(p *metallbv1beta1.IPAddressPool) {
	p.Annotations = map[string]string{ExternalIPsAnnotation: "true"}
}

func allocTo(sa metallbv1beta1.ServiceAllocation) func(*metallbv1beta1.IPAddressPool) {
	return func(p *metallbv1beta1.IPAddressPool) { p.Spec.AllocateTo = &sa }
}

func snapshot(pools []*metallbv1beta1.IPAddressPool, svcs []*corev1.Service, nss ...*corev1.Namespace) *cluster.Snapshot {
	return cluster.NewSnapshot(1, epoch, cluster.Inputs{Pools: pools, Services: svcs, Namespaces: nss})
}

// got renders an allocation compactly: "ns/name=ip,ip" or "ns/name!Reason", sorted by key.
func got(r Result) []string {
	var out []string
	for _, a := range r.Services {
		s := a.Service.String()
		if a.Refusal != nil {
			s += "!" + a.Refusal.Reason
		}
		if len(a.IPs) > 0 {
			s += "="
			for i, ip := range a.IPs {
				if i > 0 {
					s += ","
				}
				s += ip.String()
			}
		}
		out = append(out, s)
	}
	return out
}

// applied returns svcs with their status set to r's allocation, as the writer would leave them.
func applied(t *testing.T, svcs []*corev1.Service, r Result) []*corev1.Service {
	t.Helper()
	byKey := map[types.NamespacedName]Assignment{}
	for _, a := range r.Services {
		byKey[a.Service] = a
	}
	var out []*corev1.Service
	for _, s := range svcs {
		s = s.DeepCopy()
		if a, ok := byKey[types.NamespacedName{Namespace: s.Namespace, Name: s.Name}]; ok {
			s.Status.LoadBalancer.Ingress = nil
			for _, ip := range a.IPs {
				s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip.String()})
			}
		}
		out = append(out, s)
	}
	return out
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func nsWith(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func itoa(i int) string { return fmt.Sprint(i) }
