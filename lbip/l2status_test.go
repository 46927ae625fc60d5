package lbip

import (
	"context"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/baregate/baregate/internal/lab"
	"github.com/baregate/baregate/internal/testutil"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
)

func TestDesiredL2Status(t *testing.T) {
	a, b := types.NamespacedName{Namespace: "ns", Name: "a"}, types.NamespacedName{Namespace: "ns", Name: "b"}
	ip1, ip2, ip3 := netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("203.0.113.2"), netip.MustParseAddr("2001:db8:0:2::3")
	assign := []Assignment{
		{IP: ip1, Services: []types.NamespacedName{a, b}, Node: "n1"},                         // shared, all interfaces
		{IP: ip2, Services: []types.NamespacedName{{Namespace: "ns", Name: "c"}}, Node: "n2"}, // another node's
		{IP: ip3, Services: []types.NamespacedName{{Namespace: "ns", Name: "d"}}, Node: "n1", Interfaces: []string{"eth1"}},
		{IP: netip.MustParseAddr("203.0.113.4"), Services: []types.NamespacedName{{Namespace: "ns", Name: "e"}}, Node: "n1"}, // held or refused
	}
	announced := map[netip.Addr][]string{ip1: {"eth0", "eth1"}, ip3: {"eth1"}}
	got := desiredL2Status(assign, announced, "n1")
	want := map[types.NamespacedName]metallbv1beta1.MetalLBServiceL2Status{
		a:                            {Node: "n1", ServiceName: "a", ServiceNamespace: "ns"},
		b:                            {Node: "n1", ServiceName: "b", ServiceNamespace: "ns"},
		{Namespace: "ns", Name: "d"}: {Node: "n1", ServiceName: "d", ServiceNamespace: "ns", Interfaces: []metallbv1beta1.InterfaceInfo{{Name: "eth1"}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("desiredL2Status =\n%v\nwant\n%v", got, want)
	}
}

// TestL2StatusWriter runs the writer against a real API server with the chart's CRDs: objects
// appear as MetalLB's speaker writes them, follow changes, are deleted when no longer announced,
// a restarted writer adopts its own, and a dead node's leftovers go when another node takes over.
func TestL2StatusWriter(t *testing.T) {
	testutil.RequireTool(t, "etcd")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cp, _ := lab.StartTestControlPlane(ctx, t, "baregate")
	dyn, err := dynamic.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	res := dyn.Resource(serviceL2StatusGVR).Namespace("baregate")
	list := func() map[string]metallbv1beta1.ServiceL2Status {
		t.Helper()
		l, err := res.List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]metallbv1beta1.ServiceL2Status{}
		for _, u := range l.Items {
			var o metallbv1beta1.ServiceL2Status
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &o); err != nil {
				t.Fatal(err)
			}
			out[o.Labels[LabelL2Node]+"/"+o.Labels[LabelL2ServiceNamespace]+"/"+o.Labels[LabelL2ServiceName]] = o
		}
		return out
	}
	web, api := types.NamespacedName{Namespace: "shop", Name: "web"}, types.NamespacedName{Namespace: "shop", Name: "api"}
	st := func(node string, key types.NamespacedName, ifaces ...string) metallbv1beta1.MetalLBServiceL2Status {
		s := metallbv1beta1.MetalLBServiceL2Status{Node: node, ServiceName: key.Name, ServiceNamespace: key.Namespace}
		for _, i := range ifaces {
			s.Interfaces = append(s.Interfaces, metallbv1beta1.InterfaceInfo{Name: i})
		}
		return s
	}
	both := map[string]bool{"n1": true, "n2": true}

	w1 := newL2StatusWriter(dyn, "baregate", "n1")
	if err := w1.apply(ctx, map[types.NamespacedName]metallbv1beta1.MetalLBServiceL2Status{web: st("n1", web), api: st("n1", api, "eth1")}, both); err != nil {
		t.Fatal(err)
	}
	got := list()
	if len(got) != 2 || !reflect.DeepEqual(got["n1/shop/web"].Status, st("n1", web)) || !reflect.DeepEqual(got["n1/shop/api"].Status, st("n1", api, "eth1")) {
		t.Fatalf("after the first apply: %+v", got)
	}
	if name := got["n1/shop/web"].Name; len(name) <= 3 || name[:3] != "l2-" {
		t.Errorf("object named %q; MetalLB's are l2-<random>", name)
	}

	// A restarted gateway adopts its objects: an interface change updates the one object in place.
	w1 = newL2StatusWriter(dyn, "baregate", "n1")
	if err := w1.apply(ctx, map[types.NamespacedName]metallbv1beta1.MetalLBServiceL2Status{web: st("n1", web), api: st("n1", api, "eth2")}, both); err != nil {
		t.Fatal(err)
	}
	if after := list(); len(after) != 2 || after["n1/shop/api"].Name != got["n1/shop/api"].Name || !reflect.DeepEqual(after["n1/shop/api"].Status, st("n1", api, "eth2")) {
		t.Fatalf("after a restart and an interface change: %+v", after)
	}

	// n1 dies while announcing web; n2 takes web over and deletes n1's leftover, not api's (whose
	// announcer it cannot judge by this Service).
	w2 := newL2StatusWriter(dyn, "baregate", "n2")
	if err := w2.apply(ctx, map[types.NamespacedName]metallbv1beta1.MetalLBServiceL2Status{web: st("n2", web)}, map[string]bool{"n2": true}); err != nil {
		t.Fatal(err)
	}
	got = list()
	if _, ok := got["n1/shop/web"]; ok || len(got) != 2 || got["n2/shop/web"].Status.Node != "n2" {
		t.Fatalf("after n2 took web over from a dead n1: %+v", got)
	}

	// n1 stops announcing api: its object goes.
	if err := w1.apply(ctx, map[types.NamespacedName]metallbv1beta1.MetalLBServiceL2Status{}, both); err != nil {
		t.Fatal(err)
	}
	if got = list(); len(got) != 1 {
		t.Fatalf("after n1 announces nothing: %+v", got)
	}

	// Without the CRD's resource (here: another, unserved resource name) the writer pauses quietly.
	w3 := newL2StatusWriter(dyn, "baregate", "n3")
	w3.dyn = unservedDynamic{dyn}
	if err := w3.apply(ctx, map[types.NamespacedName]metallbv1beta1.MetalLBServiceL2Status{web: st("n3", web)}, both); err != nil {
		t.Errorf("apply without the CRD: %v; want a quiet pause", err)
	}
	if w3.skipUntil.IsZero() {
		t.Error("no pause recorded without the CRD")
	}
}

// unservedDynamic sends requests for ServiceL2Status to a resource the API server does not serve.
type unservedDynamic struct{ dynamic.Interface }

func (u unservedDynamic) Resource(r schema.GroupVersionResource) dynamic.NamespaceableResourceInterface {
	r.Resource = "servicel2statusesnotserved"
	return u.Interface.Resource(r)
}
