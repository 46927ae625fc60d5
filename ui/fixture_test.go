package ui

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/netip"
	"testing"
	"time"

	"github.com/baregate/baregate/internal/cluster"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// The fixture is a small lab cluster: the sample shop app behind an LB IP and an Ingress host, plus
// the awkward cases (headless, ExternalName, selector-less, no endpoints, pending IP, dead gateway).
var fixtureTime = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func meta(ns, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: metav1.NewTime(fixtureTime.Add(-time.Hour))}
}

func service(ns, name string, typ corev1.ServiceType, clusterIP string, port int32, target int) *corev1.Service {
	s := &corev1.Service{ObjectMeta: meta(ns, name), Spec: corev1.ServiceSpec{
		Type: typ, ClusterIP: clusterIP, ClusterIPs: []string{clusterIP}, Selector: map[string]string{"app": name},
		Ports: []corev1.ServicePort{{Name: "http", Port: port, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt(target)}},
	}}
	if clusterIP == corev1.ClusterIPNone {
		s.Spec.ClusterIPs = nil
	}
	return s
}

type podSpec struct {
	name, node, ip string
	ready          bool
	terminating    bool
}

// endpoints returns the EndpointSlice and Pods for a Service's pods.
func endpoints(ns, svc string, port int32, pods ...podSpec) (*discoveryv1.EndpointSlice, []*corev1.Pod) {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: svc + "-abcde", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	var out []*corev1.Pod
	for _, p := range pods {
		ep := discoveryv1.Endpoint{
			Addresses:  []string{p.ip},
			NodeName:   ptr.To(p.node),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(p.ready), Serving: ptr.To(p.ready || p.terminating), Terminating: ptr.To(p.terminating)},
		}
		if p.name != "" {
			ep.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: p.name}
			pod := &corev1.Pod{ObjectMeta: meta(ns, p.name), Spec: corev1.PodSpec{NodeName: p.node},
				Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: p.ip}}
			pod.OwnerReferences = []metav1.OwnerReference{{Kind: "ReplicaSet", Name: svc + "-7d9f8c6b5d", Controller: ptr.To(true)}}
			if p.terminating {
				pod.DeletionTimestamp = ptr.To(metav1.NewTime(fixtureTime.Add(-10 * time.Second)))
			}
			out = append(out, pod)
		}
		es.Endpoints = append(es.Endpoints, ep)
	}
	return es, out
}

func node(name, ip string, ready bool) *corev1.Node {
	st := corev1.ConditionTrue
	if !ready {
		st = corev1.ConditionFalse
	}
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.NodeSpec{PodCIDRs: []string{"198.18." + ip[len("192.0.2.1"):] + ".0/24"}},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st}},
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}}}
}

// selfSigned returns a PEM certificate for host valid until notAfter.
func selfSigned(t testing.TB, host string, notAfter time.Time) []byte {
	return certPEM(t, host, notAfter, nil)
}

// certPEM returns a PEM certificate for host valid until notAfter, issued by a CA named ca, or
// self-signed when ca is nil.
func certPEM(t testing.TB, host string, notAfter time.Time, ca *pkix.Name) []byte {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return key
	}
	key := newKey()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: notAfter.Add(-90 * 24 * time.Hour), NotAfter: notAfter}
	parent, signer := tmpl, key
	if ca != nil {
		signer = newKey()
		parent = &x509.Certificate{SerialNumber: big.NewInt(2), Subject: *ca, NotBefore: tmpl.NotBefore, NotAfter: notAfter.Add(time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

type fixtureOpts struct {
	webReplicas int  // pods of shop/web
	dropBroken  bool // delete shop/broken and the admin Ingress
}

// fixtureInputs builds the lab cluster's objects.
func fixtureInputs(t testing.TB, o fixtureOpts) cluster.Inputs {
	in := cluster.Inputs{NodeName: "node-a", LiveNodes: map[string]bool{"node-a": true, "node-b": true, "node-c": false}}
	in.Nodes = []*corev1.Node{node("node-a", "192.0.2.11", true), node("node-b", "192.0.2.12", true), node("node-c", "192.0.2.13", false)}
	add := func(svc *corev1.Service, es *discoveryv1.EndpointSlice, pods []*corev1.Pod) {
		in.Services = append(in.Services, svc)
		if es != nil {
			in.EndpointSlices = append(in.EndpointSlices, es)
		}
		in.Pods = append(in.Pods, pods...)
	}

	web := service("shop", "web", corev1.ServiceTypeLoadBalancer, "198.19.0.10", 80, 8080)
	web.Spec.Ports[0].NodePort = 30080
	web.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	web.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.10"}}
	var webPods []podSpec
	for i := range o.webReplicas {
		webPods = append(webPods, podSpec{name: fmt.Sprintf("web-7d9f8c6b5d-%c%c", 'a'+i, 'k'+i), node: []string{"node-a", "node-b"}[i%2],
			ip: fmt.Sprintf("198.18.%d.%d", 11+i%2, 10+i), ready: true})
	}
	es, pods := endpoints("shop", "web", 8080, webPods...)
	add(web, es, pods)

	api := service("shop", "api", corev1.ServiceTypeClusterIP, "198.19.0.11", 8080, 8080)
	api.Spec.ExternalIPs = []string{"198.51.100.7"}
	es, pods = endpoints("shop", "api", 8080,
		podSpec{name: "api-5c4f7b9d8-xk2lp", node: "node-b", ip: "198.18.12.20", ready: true},
		podSpec{name: "api-5c4f7b9d8-qq7zt", node: "node-a", ip: "198.18.11.21", terminating: true})
	add(api, es, pods)

	db := service("shop", "db", corev1.ServiceTypeClusterIP, corev1.ClusterIPNone, 5432, 5432)
	es, pods = endpoints("shop", "db", 5432, podSpec{name: "db-0", node: "node-b", ip: "198.18.12.30", ready: true})
	add(db, es, pods)

	pay := &corev1.Service{ObjectMeta: meta("shop", "payments"), Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "payments.example.net"}}
	add(pay, nil, nil)

	legacy := service("shop", "legacy", corev1.ServiceTypeClusterIP, "198.19.0.13", 80, 80)
	legacy.Spec.Selector = nil
	es, _ = endpoints("shop", "legacy", 80, podSpec{node: "node-c", ip: "198.18.13.40", ready: true})
	add(legacy, es, nil)

	if !o.dropBroken {
		add(service("shop", "broken", corev1.ServiceTypeClusterIP, "198.19.0.14", 80, 80), nil, nil)
	}

	preview := service("staging", "preview", corev1.ServiceTypeLoadBalancer, "198.19.1.10", 80, 8080)
	preview.Annotations = map[string]string{AddressPoolAnnotation: "default"}
	es, pods = endpoints("staging", "preview", 8080, podSpec{name: "preview-6b8d9-zzt4q", node: "node-a", ip: "198.18.11.50"})
	add(preview, es, pods)

	kube := service("default", "kubernetes", corev1.ServiceTypeClusterIP, "198.19.0.1", 443, 6443)
	kube.Spec.Selector = nil
	es, _ = endpoints("default", "kubernetes", 6443, podSpec{ip: "192.0.2.2", ready: true})
	add(kube, es, nil)

	in.IngressClasses = []*networkingv1.IngressClass{{ObjectMeta: metav1.ObjectMeta{Name: "baregate"}, Spec: networkingv1.IngressClassSpec{Controller: cluster.IngressController}}}
	prefix := networkingv1.PathTypePrefix
	backend := func(svc string, port int32) networkingv1.IngressBackend {
		return networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: svc, Port: networkingv1.ServiceBackendPort{Number: port}}}
	}
	shop := &networkingv1.Ingress{ObjectMeta: meta("shop", "shop"), Spec: networkingv1.IngressSpec{
		IngressClassName: ptr.To("baregate"),
		TLS:              []networkingv1.IngressTLS{{Hosts: []string{"shop.example.com"}, SecretName: "shop-tls"}},
		Rules: []networkingv1.IngressRule{{Host: "shop.example.com", IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
			Paths: []networkingv1.HTTPIngressPath{
				{Path: "/", PathType: &prefix, Backend: backend("web", 80)},
				{Path: "/api", PathType: &prefix, Backend: backend("api", 8080)},
			}}}}},
	}}
	in.Ingresses = append(in.Ingresses, shop)
	in.Secrets = append(in.Secrets, &corev1.Secret{ObjectMeta: meta("shop", "shop-tls"), Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: selfSigned(t, "shop.example.com", fixtureTime.Add(60*24*time.Hour))}})
	if !o.dropBroken {
		admin := &networkingv1.Ingress{ObjectMeta: meta("shop", "admin"), Spec: networkingv1.IngressSpec{
			IngressClassName: ptr.To("baregate"),
			TLS:              []networkingv1.IngressTLS{{Hosts: []string{"admin.example.com"}, SecretName: "admin-tls"}},
			Rules: []networkingv1.IngressRule{{Host: "admin.example.com", IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
				Paths: []networkingv1.HTTPIngressPath{{Path: "/", PathType: &prefix, Backend: backend("broken", 80)}}}}}},
		}}
		in.Ingresses = append(in.Ingresses, admin)
	}
	in.Pools = []*metallbv1beta1.IPAddressPool{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "metallb-system", Name: "default"}, Spec: metallbv1beta1.IPAddressPoolSpec{Addresses: []string{"203.0.113.0/24", "2001:db8:0:2::/64"}}},
	}
	return in
}

func fixtureSnapshot(t testing.TB, gen uint64, o fixtureOpts) *cluster.Snapshot {
	return cluster.NewSnapshot(gen, fixtureTime, fixtureInputs(t, o))
}

// fixtureLive is what the other components report for the fixture.
func fixtureLive() Live {
	shopIng := types.NamespacedName{Namespace: "shop", Name: "shop"}
	return Live{
		Announcements: []cluster.Announcement{{IP: netip.MustParseAddr("203.0.113.10"), Services: []types.NamespacedName{{Namespace: "shop", Name: "web"}},
			Pool: "default", Node: "node-a", Since: fixtureTime.Add(-30 * time.Minute)}},
		Forwarding: &cluster.ForwardingInfo{Runner: cluster.RunnerStatus{Name: "nodeport", LastSuccess: fixtureTime.Add(-time.Second)},
			Services: 8, Rules: 120, Elements: 40,
			Verdicts: map[types.NamespacedName]string{{Namespace: "shop", Name: "web"}: "DNAT to 3 endpoints (random), local only for external traffic"}},
		Routes: []cluster.Route{
			{Host: "shop.example.com", Path: "/", PathType: "Prefix", TLS: true, Ingress: shopIng, Service: types.NamespacedName{Namespace: "shop", Name: "web"}, Port: "80", Endpoints: 3, Requests: 1200, Errors: 3},
			{Host: "shop.example.com", Path: "/api", PathType: "Prefix", TLS: true, Ingress: shopIng, Service: types.NamespacedName{Namespace: "shop", Name: "api"}, Port: "8080", Endpoints: 1, Requests: 400, Errors: 100},
		},
		Rates: map[RouteKey]Rate{
			{Ingress: shopIng, Host: "shop.example.com", Path: "/"}:    {Requests: 40, Errors: 0.1},
			{Ingress: shopIng, Host: "shop.example.com", Path: "/api"}: {Requests: 10, Errors: 2.5},
		},
		ErrorThreshold: 0.05,
	}
}
