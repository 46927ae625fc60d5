package lbip

import (
	"fmt"
	"testing"
	"time"

	"github.com/baregate/baregate/internal/cluster"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

func TestAnnotationChanges(t *testing.T) {
	annotated := func(svc *corev1.Service, node string) *corev1.Service {
		svc.Annotations = map[string]string{AnnouncedByAnnotation: node}
		return svc
	}
	// n1 alone is live and eligible, so it owns every announced IP.
	in := cluster.Inputs{
		Nodes: []*corev1.Node{node("n1"), node("n2")}, Pools: []*metallbv1beta1.IPAddressPool{pool("lb", "203.0.113.0/24", "2001:db8:0:2::/64")},
		L2Advertisements: []*metallbv1beta1.L2Advertisement{l2adv("all", metallbv1beta1.L2AdvertisementSpec{})},
		Services: []*corev1.Service{
			lbService("new", false, "203.0.113.1", "2001:db8:0:2::1"), // gets n1
			annotated(lbService("same", false, "203.0.113.2"), "n1"),  // already right
			annotated(lbService("moved", false, "203.0.113.3"), "n2"), // n1 took it over
			annotated(lbService("nobody", true, "203.0.113.4"), "n1"), // Local, no endpoints: remove
			annotated(lbService("gone", false), "n1"),                 // no IP any more: remove
			annotated(lbService("others", false), "n2"),               // n2's stale claim: n2's business
			lbService("outside", false, "192.0.2.99"),                 // in no pool: never announced
		},
	}
	snap := cluster.NewSnapshot(1, time.Unix(0, 0), in)
	got := annotationChanges(snap, Assign(snap, map[string]bool{"n1": true}), "n1")
	show := map[string]string{}
	for k, v := range got {
		show[k.Name] = "<remove>"
		if v != nil {
			show[k.Name] = *v
		}
	}
	want := "map[gone:<remove> moved:n1 new:n1 nobody:<remove>]"
	if fmt.Sprint(show) != want {
		t.Errorf("n1's changes = %v, want %s", show, want)
	}
	// n2 owns nothing: it only drops its own stale claim, never touching n1's.
	if got := annotationChanges(snap, Assign(snap, map[string]bool{"n1": true}), "n2"); len(got) != 1 || got[svcKey("others")] != nil {
		t.Errorf("n2's changes = %v, want only the removal on default/others", got)
	} else if _, ok := got[svcKey("others")]; !ok {
		t.Errorf("n2's changes = %v, want the removal on default/others", got)
	}
}

func svcKey(name string) types.NamespacedName {
	return types.NamespacedName{Namespace: "default", Name: name}
}
