package cluster

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

// universe makes random versions of a small set of objects, so that random changes hit the same
// keys again and again: moves of a slice between Services, an Ingress changing class, a Secret
// that an Ingress starts to reference ...
type universe struct {
	r   *rand.Rand
	ver int
}

func (u *universe) pick(names ...string) string { return names[u.r.IntN(len(names))] }

func (u *universe) meta(ns, name string) metav1.ObjectMeta {
	u.ver++
	return metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: fmt.Sprint(u.ver)}
}

// object returns a new version of a random object, and its kind and key.
func (u *universe) object() (Kind, types.NamespacedName, any) {
	ns := u.pick("a", "b")
	kind := Kind(u.r.IntN(int(numKinds)))
	var obj namespacedObject
	switch kind {
	case KindService:
		obj = &corev1.Service{ObjectMeta: u.meta(ns, u.pick("web", "api", "db"))}
	case KindEndpointSlice:
		es := slice(ns, u.pick("web", "api", "db", ""), u.pick("s1", "s2", "s3", "s4"), int32(u.r.IntN(3)+80),
			ep(fmt.Sprintf("198.18.0.%d", u.r.IntN(4)), "n1", "p", u.r.IntN(2) == 0))
		es.ObjectMeta = u.meta(ns, es.Name)
		if svc := u.pick("web", "api", "db", ""); svc != "" {
			es.Labels = map[string]string{discoveryv1.LabelServiceName: svc}
		}
		obj = es
	case KindNode:
		obj = &corev1.Node{ObjectMeta: u.meta("", u.pick("n1", "n2", "n3"))}
	case KindPod:
		obj = &corev1.Pod{ObjectMeta: u.meta(ns, u.pick("p1", "p2"))}
	case KindNamespace:
		obj = &corev1.Namespace{ObjectMeta: u.meta("", ns)}
	case KindIngress:
		ing := ingress(u.pick("i1", "i2", "i3", "i4", "i5"), u.r.IntN(3), ptr.To(u.pick("ours", "theirs")), "", u.pick("", "c1", "c2"))
		m := u.meta(ns, ing.Name)
		m.CreationTimestamp = ing.CreationTimestamp
		ing.ObjectMeta = m
		if u.r.IntN(3) == 0 {
			ing.Spec.IngressClassName = nil
		}
		if u.r.IntN(2) == 0 {
			ing.Annotations = map[string]string{"auth": u.pick("u1", "u2")}
		}
		obj = ing
	case KindIngressClass:
		obj = class(u.pick("ours", "theirs"), u.pick(IngressController, "other"), u.r.IntN(2) == 0)
		obj.(*networkingv1.IngressClass).ResourceVersion = fmt.Sprint(u.ver)
	case KindSecret:
		obj = &corev1.Secret{ObjectMeta: u.meta(ns, u.pick("c1", "c2", "u1", "u2"))}
	case KindPool:
		obj = &metallbv1beta1.IPAddressPool{ObjectMeta: u.meta("metallb", u.pick("p1", "p2"))}
	case KindL2Advertisement:
		obj = &metallbv1beta1.L2Advertisement{ObjectMeta: u.meta("metallb", u.pick("l1", "l2"))}
	}
	return kind, keyOf(obj), obj
}

// authRefs stands in for the ingress package's annotation rules.
func authRefs(ing *networkingv1.Ingress) []types.NamespacedName {
	if name := ing.Annotations["auth"]; name != "" {
		return []types.NamespacedName{{Namespace: ing.Namespace, Name: name}}
	}
	return nil
}

// held is what the informer caches would hold: the latest object of each kind and key.
type held map[Kind]map[types.NamespacedName]any

func (h held) inputs(live map[string]bool) Inputs {
	in := Inputs{NodeName: "n1", LiveNodes: live, IngressSecretRefs: authRefs}
	for kind, objs := range h {
		for _, o := range objs {
			switch kind {
			case KindService:
				in.Services = append(in.Services, o.(*corev1.Service))
			case KindEndpointSlice:
				in.EndpointSlices = append(in.EndpointSlices, o.(*discoveryv1.EndpointSlice))
			case KindNode:
				in.Nodes = append(in.Nodes, o.(*corev1.Node))
			case KindPod:
				in.Pods = append(in.Pods, o.(*corev1.Pod))
			case KindNamespace:
				in.Namespaces = append(in.Namespaces, o.(*corev1.Namespace))
			case KindIngress:
				in.Ingresses = append(in.Ingresses, o.(*networkingv1.Ingress))
			case KindIngressClass:
				in.IngressClasses = append(in.IngressClasses, o.(*networkingv1.IngressClass))
			case KindSecret:
				in.Secrets = append(in.Secrets, o.(*corev1.Secret))
			case KindPool:
				in.Pools = append(in.Pools, o.(*metallbv1beta1.IPAddressPool))
			case KindL2Advertisement:
				in.L2Advertisements = append(in.L2Advertisements, o.(*metallbv1beta1.L2Advertisement))
			}
		}
	}
	return in
}

// TestBuilderMatchesFullBuild applies random changes to a Builder and checks each incremental
// snapshot against one built from scratch out of the same objects, and that what no change
// touched is shared with the previous snapshot.
func TestBuilderMatchesFullBuild(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			u := &universe{r: rand.New(rand.NewPCG(seed, 1))}
			h := held{}
			b := NewBuilder("n1", authRefs)
			var prev *Snapshot
			var live map[string]bool
			for step := range 60 {
				touched := map[Kind]bool{}
				touchedSvc := map[types.NamespacedName]bool{}
				for range u.r.IntN(4) + 1 {
					kind, key, obj := u.object()
					if h[kind] == nil {
						h[kind] = map[types.NamespacedName]any{}
					}
					old, existed := h[kind][key]
					if u.r.IntN(4) == 0 {
						b.Delete(kind, key)
						delete(h[kind], key)
						if !existed {
							continue
						}
						obj = nil // only the deleted version touched anything
					} else {
						b.Set(obj)
						h[kind][key] = obj
					}
					touched[kind] = true
					for _, o := range []any{old, obj} {
						switch o := o.(type) {
						case *corev1.Service:
							touchedSvc[keyOf(o)] = true
						case *discoveryv1.EndpointSlice:
							if svc, ok := sliceService(o); ok {
								touchedSvc[svc] = true
							}
						}
					}
				}
				if u.r.IntN(5) == 0 {
					live = map[string]bool{"n1": true, "n2": u.r.IntN(2) == 0}
					b.SetLiveNodes(live)
				}
				taken := time.Unix(int64(step), 0)
				got := b.Build(uint64(step), taken)
				want := NewSnapshot(uint64(step), taken, h.inputs(live))
				if diff := cmp.Diff(want, got, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
					t.Fatalf("step %d: incremental snapshot differs from a full build (-full +incremental):\n%s", step, diff)
				}
				if prev != nil {
					checkShared(t, step, prev, got, touched, touchedSvc)
				}
				prev = got
			}
		})
	}
}

func checkShared(t *testing.T, step int, prev, cur *Snapshot, touched map[Kind]bool, touchedSvc map[types.NamespacedName]bool) {
	t.Helper()
	for _, svc := range cur.Services {
		if old := prev.Service(svc.Key()); old != nil && !touchedSvc[svc.Key()] && old != svc {
			t.Errorf("step %d: Service %s untouched but its entry is new", step, svc.Key())
		}
	}
	changed := cur.ServicesChanged(prev)
	for _, key := range changed {
		if !touchedSvc[key] {
			t.Errorf("step %d: ServicesChanged lists untouched %s", step, key)
		}
	}
	for key := range touchedSvc {
		if (prev.Service(key) != nil || cur.Service(key) != nil) && !slices.Contains(changed, key) {
			t.Errorf("step %d: ServicesChanged misses %s", step, key)
		}
	}
	if !touched[KindService] && !touched[KindEndpointSlice] && !SameSlice(prev.Services, cur.Services) {
		t.Errorf("step %d: Services rebuilt without a Service or slice change", step)
	}
	for kind, same := range map[Kind]bool{
		KindNode:            SameMap(prev.Nodes, cur.Nodes),
		KindPod:             SameMap(prev.Pods, cur.Pods),
		KindNamespace:       SameMap(prev.Namespaces, cur.Namespaces),
		KindPool:            SameSlice(prev.Pools, cur.Pools),
		KindL2Advertisement: SameSlice(prev.L2Advertisements, cur.L2Advertisements),
	} {
		if !touched[kind] && !same {
			t.Errorf("step %d: kind %d rebuilt without a change of its kind", step, kind)
		}
	}
	if !touched[KindIngress] && !touched[KindIngressClass] && !SameSlice(prev.Ingresses, cur.Ingresses) {
		t.Errorf("step %d: Ingresses rebuilt without an Ingress or class change", step)
	}
	if !touched[KindIngress] && !touched[KindIngressClass] && !touched[KindSecret] && !SameMap(prev.Secrets, cur.Secrets) {
		t.Errorf("step %d: Secrets rebuilt without an Ingress, class or Secret change", step)
	}
}

func TestBuilderIgnoresUnknownTypes(t *testing.T) {
	b := NewBuilder("n1", nil)
	if b.Set(&corev1.ConfigMap{}) {
		t.Error("Set accepted a ConfigMap")
	}
	if !b.Set(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "web"}}) {
		t.Error("Set refused a Service")
	}
}

func TestServicesChanged(t *testing.T) {
	b := NewBuilder("n1", nil)
	for _, name := range []string{"a", "b", "c"} {
		b.Set(svc("ns", name))
	}
	first := b.Build(1, time.Time{})
	if got := first.ServicesChanged(nil); len(got) != 3 {
		t.Errorf("against no snapshot: %v, want all three", got)
	}
	if got := first.ServicesChanged(first); got != nil {
		t.Errorf("against itself: %v", got)
	}
	b.Delete(KindService, types.NamespacedName{Namespace: "ns", Name: "a"})
	b.Set(slice("ns", "b", "b-1", 80, ep("198.18.0.1", "n1", "p", true)))
	b.Set(svc("ns", "d"))
	second := b.Build(2, time.Time{})
	want := []types.NamespacedName{{Namespace: "ns", Name: "a"}, {Namespace: "ns", Name: "b"}, {Namespace: "ns", Name: "d"}}
	if diff := cmp.Diff(want, second.ServicesChanged(first)); diff != "" {
		t.Errorf("ServicesChanged (-want +got):\n%s", diff)
	}
	if first.Service(types.NamespacedName{Namespace: "ns", Name: "c"}) != second.Service(types.NamespacedName{Namespace: "ns", Name: "c"}) {
		t.Error("untouched Service c got a new entry")
	}
	if b.Build(3, time.Time{}).ServicesChanged(second) != nil {
		t.Error("a Build without changes changed Services")
	}
}
