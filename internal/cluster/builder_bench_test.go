package cluster

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/utils/ptr"
)

// scaleInputs is a big cluster: services Services with one 10-endpoint slice each, ingresses
// Ingresses of our class (each with a TLS Secret), 100 Nodes.
func scaleInputs(services, ingresses int) Inputs {
	in := Inputs{NodeName: "n1", IngressClasses: []*networkingv1.IngressClass{class("baregate", IngressController, false)}}
	for i := range services {
		ns, name := fmt.Sprint("ns", i%100), fmt.Sprint("svc", i)
		in.Services = append(in.Services, svc(ns, name))
		var eps []discoveryv1.Endpoint
		for j := range 10 {
			eps = append(eps, ep(fmt.Sprintf("198.18.%d.%d", i%250, j+1), fmt.Sprint("n", j), fmt.Sprint(name, "-", j), true))
		}
		in.EndpointSlices = append(in.EndpointSlices, slice(ns, name, name+"-abc", 8080, eps...))
	}
	for i := range ingresses {
		ing := ingress(fmt.Sprint("ing", i), i, ptr.To("baregate"), "", fmt.Sprint("cert", i))
		in.Ingresses = append(in.Ingresses, ing)
		in.Secrets = append(in.Secrets, &corev1.Secret{ObjectMeta: ing.ObjectMeta})
		in.Secrets[i].Name = fmt.Sprint("cert", i)
	}
	for i := range 100 {
		in.Nodes = append(in.Nodes, &corev1.Node{})
		in.Nodes[i].Name = fmt.Sprint("n", i)
	}
	return in
}

// BenchmarkSnapshotOneChange is the gateway's snapshot stage for one EndpointSlice change (or one
// new Ingress) with 10k Services and 5k Ingresses present: "full" is how it was done before the
// Builder (a new snapshot from the full lists, as NewSnapshot does), "incremental" is the Builder
// fed the one changed object.
func BenchmarkSnapshotOneChange(b *testing.B) {
	in := scaleInputs(10000, 5000)
	changedSlice := func(i int) *discoveryv1.EndpointSlice {
		es := *in.EndpointSlices[0]
		es.Endpoints = es.Endpoints[:1+i%9]
		return &es
	}
	newIngress := func(i int) *networkingv1.Ingress {
		return ingress(fmt.Sprint("new", i), -i, ptr.To("baregate"), "", "")
	}
	b.Run("change=slice/full", func(b *testing.B) {
		full := in
		full.EndpointSlices = append([]*discoveryv1.EndpointSlice(nil), in.EndpointSlices...)
		b.ReportAllocs()
		for i := range b.N {
			full.EndpointSlices[0] = changedSlice(i)
			NewSnapshot(uint64(i), time.Now(), full)
		}
	})
	b.Run("change=slice/incremental", func(b *testing.B) {
		bld := builderFor(in)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			bld.Set(changedSlice(i))
			bld.Build(uint64(i), time.Now())
		}
	})
	b.Run("change=ingress/full", func(b *testing.B) {
		full := in
		full.Ingresses = append([]*networkingv1.Ingress(nil), in.Ingresses...)
		b.ReportAllocs()
		for i := range b.N {
			full.Ingresses = append(full.Ingresses, newIngress(i))
			NewSnapshot(uint64(i), time.Now(), full)
			full.Ingresses = full.Ingresses[:len(in.Ingresses)]
		}
	})
	b.Run("change=ingress/incremental", func(b *testing.B) {
		bld := builderFor(in)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			bld.Set(newIngress(i))
			bld.Build(uint64(i), time.Now())
		}
	})
}

func builderFor(in Inputs) *Builder {
	bld := NewBuilder(in.NodeName, nil)
	for _, list := range [][]any{anys(in.Services), anys(in.EndpointSlices), anys(in.Nodes), anys(in.Ingresses),
		anys(in.IngressClasses), anys(in.Secrets)} {
		for _, o := range list {
			bld.Set(o)
		}
	}
	bld.Build(0, time.Now())
	return bld
}
