package cluster

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

func svc(ns, name string, mut ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	for _, m := range mut {
		m(s)
	}
	return s
}

func lb(class *string) func(*corev1.Service) {
	return func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
		s.Spec.LoadBalancerClass = class
	}
}

func slice(ns, svcName, name string, port int32, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svcName}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints:   eps,
	}
}

func ep(addr, node, pod string, ready bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{
		Addresses:  []string{addr},
		NodeName:   ptr.To(node),
		Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)},
		TargetRef:  &corev1.ObjectReference{Kind: "Pod", Name: pod},
	}
}

func TestSnapshotResolvesServiceSlicesAndPods(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1"}}
	in := Inputs{
		NodeName: "node1",
		Services: []*corev1.Service{svc("shop", "web"), svc("shop", "api"), svc("other", "web")},
		EndpointSlices: []*discoveryv1.EndpointSlice{
			slice("shop", "web", "web-b", 8080, ep("198.18.2.5", "node2", "web-2", false)),
			slice("shop", "web", "web-a", 8080, ep("198.18.1.5", "node1", "web-1", true),
				// the same address again in a second slice, during a slice move: counted once, the ready view kept
				ep("198.18.2.5", "node2", "web-2", true)),
			slice("shop", "gone", "gone-a", 80, ep("198.18.1.9", "node1", "x", true)),
			{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "unlabelled"}},
		},
		Pods:  []*corev1.Pod{pod},
		Nodes: []*corev1.Node{{ObjectMeta: metav1.ObjectMeta{Name: "node1"}}},
	}
	s := NewSnapshot(7, time.Unix(1, 0), in)

	var keys []string
	for _, sv := range s.Services {
		keys = append(keys, sv.Key().String())
	}
	if diff := cmp.Diff([]string{"other/web", "shop/api", "shop/web"}, keys); diff != "" {
		t.Errorf("services not sorted by key (-want +got):\n%s", diff)
	}
	web := s.Service(types.NamespacedName{Namespace: "shop", Name: "web"})
	if web == nil {
		t.Fatal("shop/web missing")
	}
	if len(web.Slices) != 2 || web.Slices[0].Name != "web-a" {
		t.Errorf("slices of shop/web: got %d, first %q; want 2 sorted by name", len(web.Slices), web.Slices[0].Name)
	}
	type view struct {
		Addr  string
		Node  string
		Ready bool
		Pod   string
	}
	var got []view
	for _, e := range web.Endpoints {
		got = append(got, view{e.Addr.String(), e.NodeName, e.Ready, e.Pod.String()})
	}
	want := []view{{"198.18.1.5", "node1", true, "shop/web-1"}, {"198.18.2.5", "node2", true, "shop/web-2"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("endpoints (-want +got):\n%s", diff)
	}
	if p, ok := web.Endpoints[0].Port("http", corev1.ProtocolTCP); !ok || p != 8080 {
		t.Errorf("Port(http) = %d, %v; want 8080", p, ok)
	}
	if _, ok := web.Endpoints[0].Port("http", corev1.ProtocolUDP); ok {
		t.Error("Port(http, UDP) found a TCP port")
	}
	if s.Pods[types.NamespacedName{Namespace: "shop", Name: "web-1"}] != pod {
		t.Error("pod not indexed")
	}
	if s.Service(types.NamespacedName{Namespace: "shop", Name: "gone"}) != nil {
		t.Error("a slice without its Service made up a Service")
	}
}

func TestEndpointConditionDefaults(t *testing.T) {
	// The API says unset ready and serving mean true and unset terminating false.
	s := NewSnapshot(1, time.Time{}, Inputs{
		Services: []*corev1.Service{svc("ns", "a")},
		EndpointSlices: []*discoveryv1.EndpointSlice{slice("ns", "a", "a-1", 80,
			discoveryv1.Endpoint{Addresses: []string{"198.18.1.1"}},
			discoveryv1.Endpoint{Addresses: []string{"198.18.1.2"}, Conditions: discoveryv1.EndpointConditions{
				Ready: ptr.To(false), Serving: ptr.To(true), Terminating: ptr.To(true)}},
			discoveryv1.Endpoint{Addresses: []string{"not-an-ip"}},
		)},
	})
	eps := s.Services[0].Endpoints
	if len(eps) != 2 {
		t.Fatalf("got %d endpoints, want 2 (the bad address dropped)", len(eps))
	}
	if !eps[0].Ready || !eps[0].Serving || eps[0].Terminating {
		t.Errorf("unset conditions: %+v", eps[0])
	}
	if eps[1].Ready || !eps[1].Serving || !eps[1].Terminating {
		t.Errorf("terminating endpoint: %+v", eps[1])
	}
	if eps[0].Addr != netip.MustParseAddr("198.18.1.1") {
		t.Errorf("addr %v", eps[0].Addr)
	}
}

func TestLoadBalancersLeaveOtherClassesOut(t *testing.T) {
	s := NewSnapshot(1, time.Time{}, Inputs{Services: []*corev1.Service{
		svc("ns", "default-class", lb(nil)),
		svc("ns", "ours", lb(ptr.To(LoadBalancerClass))),
		svc("ns", "cloud", lb(ptr.To("example.com/other"))),
		svc("ns", "clusterip"),
	}})
	var got []string
	for _, sv := range s.LoadBalancers() {
		got = append(got, sv.Name)
	}
	if diff := cmp.Diff([]string{"default-class", "ours"}, got); diff != "" {
		t.Errorf("LoadBalancers (-want +got):\n%s", diff)
	}
	if len(s.Services) != 4 {
		t.Errorf("Services must keep every Service for forwarding; got %d", len(s.Services))
	}
}

func class(name, controller string, isDefault bool) *networkingv1.IngressClass {
	c := &networkingv1.IngressClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: networkingv1.IngressClassSpec{Controller: controller}}
	if isDefault {
		c.Annotations = map[string]string{DefaultIngressClassAnnotation: "true"}
	}
	return c
}

func ingress(name string, age int, className *string, legacy string, tlsSecret string) *networkingv1.Ingress {
	ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name,
		CreationTimestamp: metav1.NewTime(time.Unix(int64(1000-age), 0))}}
	ing.Spec.IngressClassName = className
	if legacy != "" {
		ing.Annotations = map[string]string{LegacyIngressClassAnnotation: legacy}
	}
	if tlsSecret != "" {
		ing.Spec.TLS = []networkingv1.IngressTLS{{Hosts: []string{"a.example"}, SecretName: tlsSecret}}
	}
	return ing
}

func TestIngressClassSelection(t *testing.T) {
	ingresses := []*networkingv1.Ingress{
		ingress("by-name", 1, ptr.To("baregate"), "", "cert"),
		ingress("other-class", 2, ptr.To("nginx"), "", "other-cert"),
		ingress("legacy-ours", 3, nil, "baregate", ""),
		ingress("legacy-other", 4, nil, "nginx", ""),
		ingress("classless", 5, nil, "", ""),
		ingress("unknown-class", 6, ptr.To("missing"), "", ""),
	}
	secrets := []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "cert"}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "other-cert"}},
	}
	for _, tc := range []struct {
		name    string
		classes []*networkingv1.IngressClass
		want    []string
	}{
		{"not default", []*networkingv1.IngressClass{class("baregate", IngressController, false), class("nginx", "k8s.io/ingress-nginx", false)},
			[]string{"legacy-ours", "by-name"}},
		{"ours is default", []*networkingv1.IngressClass{class("baregate", IngressController, true), class("nginx", "k8s.io/ingress-nginx", false)},
			[]string{"classless", "legacy-ours", "by-name"}},
		{"two defaults", []*networkingv1.IngressClass{class("baregate", IngressController, true), class("nginx", "k8s.io/ingress-nginx", true)},
			[]string{"legacy-ours", "by-name"}},
		{"no class of ours", []*networkingv1.IngressClass{class("nginx", "k8s.io/ingress-nginx", true)}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewSnapshot(1, time.Time{}, Inputs{IngressClasses: tc.classes, Ingresses: ingresses, Secrets: secrets})
			var got []string
			for _, ing := range s.Ingresses {
				got = append(got, ing.Name)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("served ingresses, oldest first (-want +got):\n%s", diff)
			}
			for _, c := range s.IngressClasses {
				if c.Spec.Controller != IngressController {
					t.Errorf("foreign class %q kept", c.Name)
				}
			}
			if _, leaked := s.Secrets[types.NamespacedName{Namespace: "ns", Name: "other-cert"}]; leaked {
				t.Error("a Secret referenced only by another controller's Ingress is in the snapshot")
			}
			_, hasCert := s.Secrets[types.NamespacedName{Namespace: "ns", Name: "cert"}]
			if wantCert := len(tc.want) > 0; hasCert != wantCert {
				t.Errorf("cert Secret present = %v, want %v", hasCert, wantCert)
			}
		})
	}
}

func TestNodeLive(t *testing.T) {
	s := NewSnapshot(1, time.Time{}, Inputs{})
	if !s.NodeLive("any") {
		t.Error("without a gossip view every node counts as live")
	}
	s = NewSnapshot(1, time.Time{}, Inputs{LiveNodes: map[string]bool{"a": true}})
	if !s.NodeLive("a") || s.NodeLive("b") {
		t.Error("gossip view not honoured")
	}
}

func TestSecretsReferencedByServedIngresses(t *testing.T) {
	ours := class("baregate", IngressController, false)
	withAuth := func(ing *networkingv1.Ingress, ref string) *networkingv1.Ingress {
		ing.Annotations = map[string]string{"auth-secret": ref}
		return ing
	}
	// A stand-in for the ingress package's rules: the annotation names "name" or "ns/name".
	refs := func(ing *networkingv1.Ingress) []types.NamespacedName {
		ref, ok := ing.Annotations["auth-secret"]
		if !ok {
			return nil
		}
		if ns, name, ok := strings.Cut(ref, "/"); ok {
			return []types.NamespacedName{{Namespace: ns, Name: name}}
		}
		return []types.NamespacedName{{Namespace: ing.Namespace, Name: ref}}
	}
	secret := func(ns, name string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	}
	all := []*corev1.Secret{secret("ns", "cert"), secret("ns", "users"), secret("team", "users"), secret("ns", "unused"),
		secret("ns", "foreign-users"), secret("other", "cert")}
	ingresses := []*networkingv1.Ingress{
		ingress("tls", 1, ptr.To("baregate"), "", "cert"),
		withAuth(ingress("auth", 2, ptr.To("baregate"), "", ""), "users"),
		withAuth(ingress("auth-ns", 3, ptr.To("baregate"), "", ""), "team/users"),
		withAuth(ingress("auth-missing", 4, ptr.To("baregate"), "", "no-such-cert"), "no-such-users"),
		withAuth(ingress("foreign", 5, ptr.To("nginx"), "", "unused"), "foreign-users"),
	}
	for _, tc := range []struct {
		name string
		refs func(*networkingv1.Ingress) []types.NamespacedName
		want []string
	}{
		{"spec.tls only without refs", nil, []string{"ns/cert"}},
		{"tls and annotation refs", refs, []string{"ns/cert", "ns/users", "team/users"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewSnapshot(1, time.Time{}, Inputs{IngressClasses: []*networkingv1.IngressClass{ours}, Ingresses: ingresses,
				Secrets: all, IngressSecretRefs: tc.refs})
			var got []string
			for key, sec := range s.Secrets {
				if key.Namespace != sec.Namespace || key.Name != sec.Name {
					t.Errorf("Secret %s/%s filed under %s", sec.Namespace, sec.Name, key)
				}
				got = append(got, key.String())
			}
			slices.Sort(got)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Secrets (-want +got):\n%s", diff)
			}
		})
	}
}
