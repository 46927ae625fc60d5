package cluster

import (
	"cmp"
	"maps"
	"slices"
	"strings"
	"time"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Kind names a kind of object a Builder holds, for Delete.
type Kind uint8

// The kinds of objects a Snapshot is made of.
const (
	KindService Kind = iota
	KindEndpointSlice
	KindNode
	KindPod
	KindNamespace
	KindIngress
	KindIngressClass
	KindSecret
	KindPool
	KindL2Advertisement
	numKinds
)

// Builder keeps the cluster's objects between snapshots and builds each Snapshot from the changes
// since the previous one, so that one change among 10k Services costs about one Service's work
// rather than a rebuild of everything. What did not change is shared with the previous Snapshot
// (see the contract on Snapshot). The zero value is not usable; a Builder is not safe for
// concurrent use, and the objects handed to it must not be mutated afterwards (informer cache
// objects qualify).
type Builder struct {
	nodeName   string
	secretRefs func(*networkingv1.Ingress) []types.NamespacedName

	services map[types.NamespacedName]*corev1.Service
	slices   map[types.NamespacedName]*discoveryv1.EndpointSlice
	// bySvc indexes slices by the Service their label names, then by slice name.
	bySvc map[types.NamespacedName]map[string]*discoveryv1.EndpointSlice
	// dirty holds the Services whose resolved entry must be redone: the Service or one of its
	// slices changed.
	dirty map[types.NamespacedName]bool

	nodes      objects[*corev1.Node]
	pods       objects[*corev1.Pod]
	namespaces objects[*corev1.Namespace]
	ingresses  objects[*networkingv1.Ingress]
	classes    objects[*networkingv1.IngressClass]
	secrets    objects[*corev1.Secret]
	pools      objects[*metallbv1beta1.IPAddressPool]
	l2s        objects[*metallbv1beta1.L2Advertisement]
	// ingOrder holds every Ingress (served or not) in the order Snapshot.Ingresses uses, kept
	// sorted as Ingresses come and go so that a change does not sort thousands again.
	ingOrder []*networkingv1.Ingress
	// ingChanges lists the Ingress changes since the last Build in order (old nil for an add, new
	// nil for a delete), so a few changes edit the served list instead of filtering thousands.
	ingChanges  []ingressChange
	filter      ingressFilter // of the classes at the last Build
	liveNodes   map[string]bool
	liveChanged bool

	prev *Snapshot
}

type ingressChange struct{ old, new *networkingv1.Ingress }

// objects is one kind's objects by key, and whether any changed since the last Build.
type objects[T namespacedObject] struct {
	m       map[types.NamespacedName]T
	changed bool
}

func (o *objects[T]) set(obj T) (old T, existed bool) {
	if o.m == nil {
		o.m = map[types.NamespacedName]T{}
	}
	key := keyOf(obj)
	old, existed = o.m[key]
	o.m[key] = obj
	o.changed = true
	return old, existed
}

func (o *objects[T]) delete(key types.NamespacedName) (old T, existed bool) {
	old, existed = o.m[key]
	if existed {
		delete(o.m, key)
		o.changed = true
	}
	return old, existed
}

// sorted returns the objects sorted by key, in a new slice.
func (o *objects[T]) sorted() []T {
	return sortedByKey(slices.Collect(maps.Values(o.m)))
}

func keyOf(obj namespacedObject) types.NamespacedName {
	return types.NamespacedName{Namespace: obj.GetNamespace(), Name: obj.GetName()}
}

// NewBuilder returns an empty Builder for the gateway of nodeName. secretRefs is as
// Inputs.IngressSecretRefs.
func NewBuilder(nodeName string, secretRefs func(*networkingv1.Ingress) []types.NamespacedName) *Builder {
	return &Builder{
		nodeName:   nodeName,
		secretRefs: secretRefs,
		services:   map[types.NamespacedName]*corev1.Service{},
		slices:     map[types.NamespacedName]*discoveryv1.EndpointSlice{},
		bySvc:      map[types.NamespacedName]map[string]*discoveryv1.EndpointSlice{},
		dirty:      map[types.NamespacedName]bool{},
	}
}

// Set adds obj or replaces the object with its kind and key. It reports false, doing nothing, for
// a type that is not part of a Snapshot.
func (b *Builder) Set(obj any) bool {
	switch o := obj.(type) {
	case *corev1.Service:
		b.services[keyOf(o)] = o
		b.dirty[keyOf(o)] = true
	case *discoveryv1.EndpointSlice:
		b.deleteSlice(keyOf(o))
		b.slices[keyOf(o)] = o
		if svc, ok := sliceService(o); ok {
			if b.bySvc[svc] == nil {
				b.bySvc[svc] = map[string]*discoveryv1.EndpointSlice{}
			}
			b.bySvc[svc][o.Name] = o
			b.dirty[svc] = true
		}
	case *corev1.Node:
		b.nodes.set(o)
	case *corev1.Pod:
		b.pods.set(o)
	case *corev1.Namespace:
		b.namespaces.set(o)
	case *networkingv1.Ingress:
		old, ok := b.ingresses.set(o)
		if ok {
			b.ingOrder = removeOrdered(b.ingOrder, old)
		}
		b.ingOrder = insertOrdered(b.ingOrder, o)
		b.ingChanges = append(b.ingChanges, ingressChange{old, o})
	case *networkingv1.IngressClass:
		b.classes.set(o)
	case *corev1.Secret:
		b.secrets.set(o)
	case *metallbv1beta1.IPAddressPool:
		b.pools.set(o)
	case *metallbv1beta1.L2Advertisement:
		b.l2s.set(o)
	default:
		return false
	}
	return true
}

// Delete removes the object of kind with key, if there is one.
func (b *Builder) Delete(kind Kind, key types.NamespacedName) {
	switch kind {
	case KindService:
		if _, ok := b.services[key]; ok {
			delete(b.services, key)
			b.dirty[key] = true
		}
	case KindEndpointSlice:
		b.deleteSlice(key)
	case KindNode:
		b.nodes.delete(key)
	case KindPod:
		b.pods.delete(key)
	case KindNamespace:
		b.namespaces.delete(key)
	case KindIngress:
		if old, ok := b.ingresses.delete(key); ok {
			b.ingOrder = removeOrdered(b.ingOrder, old)
			b.ingChanges = append(b.ingChanges, ingressChange{old: old})
		}
	case KindIngressClass:
		b.classes.delete(key)
	case KindSecret:
		b.secrets.delete(key)
	case KindPool:
		b.pools.delete(key)
	case KindL2Advertisement:
		b.l2s.delete(key)
	}
}

// SetLiveNodes replaces the gossip's view of live nodes (nil: no view). The map must not be
// changed afterwards.
func (b *Builder) SetLiveNodes(live map[string]bool) {
	if !maps.Equal(live, b.liveNodes) || (live == nil) != (b.liveNodes == nil) {
		b.liveNodes, b.liveChanged = live, true
	}
}

func (b *Builder) deleteSlice(key types.NamespacedName) {
	old, ok := b.slices[key]
	if !ok {
		return
	}
	delete(b.slices, key)
	if svc, ok := sliceService(old); ok {
		delete(b.bySvc[svc], old.Name)
		if len(b.bySvc[svc]) == 0 {
			delete(b.bySvc, svc)
		}
		b.dirty[svc] = true
	}
}

// sliceService is the Service an EndpointSlice belongs to, by its service-name label.
func sliceService(es *discoveryv1.EndpointSlice) (types.NamespacedName, bool) {
	name := es.Labels[discoveryv1.LabelServiceName]
	return types.NamespacedName{Namespace: es.Namespace, Name: name}, name != ""
}

// Build returns a Snapshot of the objects held now. Parts that did not change since the previous
// Build are shared with the Snapshot it returned.
func (b *Builder) Build(generation uint64, taken time.Time) *Snapshot {
	prev := b.prev
	if prev == nil {
		prev = &Snapshot{} // nothing to share: every kind counts as changed below
	}
	first := b.prev == nil
	s := &Snapshot{
		Generation:       generation,
		Taken:            taken,
		NodeName:         b.nodeName,
		Services:         prev.Services,
		Nodes:            prev.Nodes,
		Pods:             prev.Pods,
		Namespaces:       prev.Namespaces,
		Ingresses:        prev.Ingresses,
		IngressClasses:   prev.IngressClasses,
		Secrets:          prev.Secrets,
		Pools:            prev.Pools,
		L2Advertisements: prev.L2Advertisements,
		LiveNodes:        prev.LiveNodes,
	}
	if len(b.dirty) > 0 || first {
		s.Services = b.mergeServices(prev.Services)
	}
	if b.nodes.changed || first {
		s.Nodes = byName(b.nodes.m)
	}
	if b.namespaces.changed || first {
		s.Namespaces = byName(b.namespaces.m)
	}
	if b.pods.changed || first {
		s.Pods = maps.Clone(b.pods.m)
		if s.Pods == nil {
			s.Pods = map[types.NamespacedName]*corev1.Pod{}
		}
	}
	b.buildIngresses(s, prev, first)
	if b.pools.changed || first {
		s.Pools = b.pools.sorted()
	}
	if b.l2s.changed || first {
		s.L2Advertisements = b.l2s.sorted()
	}
	if b.liveChanged || first {
		s.LiveNodes = b.liveNodes
	}

	clear(b.dirty)
	clear(b.ingChanges) // let the replaced Ingresses go
	b.ingChanges = b.ingChanges[:0]
	b.nodes.changed, b.pods.changed, b.namespaces.changed, b.ingresses.changed = false, false, false, false
	b.classes.changed, b.secrets.changed, b.pools.changed, b.l2s.changed, b.liveChanged = false, false, false, false, false
	b.prev = s
	return s
}

// maxIngressEdits is how many Ingress changes are applied to the previous served list one by one;
// more, and filtering every Ingress again is as cheap.
const maxIngressEdits = 64

// buildIngresses fills s's IngressClasses, Ingresses and Secrets. With the classes unchanged and a
// few Ingress changes, it edits the previous served list, and keeps the previous Secrets when no
// changed Ingress references an existing Secret: a new Ingress among 5,000 then costs a copy of
// the list rather than a filter of it and a new map of every certificate.
func (b *Builder) buildIngresses(s, prev *Snapshot, first bool) {
	if first || b.classes.changed {
		s.IngressClasses, b.filter = newIngressFilter(b.classes.sorted())
	}
	if !b.ingresses.changed && !b.classes.changed && !b.secrets.changed && !first {
		return
	}
	few := !first && !b.classes.changed && len(b.ingChanges) <= maxIngressEdits
	if few {
		if len(b.ingChanges) > 0 {
			s.Ingresses = slices.Clone(prev.Ingresses)
			for _, ch := range b.ingChanges {
				if ch.old != nil && b.filter.serves(ch.old) {
					s.Ingresses = removeOrdered(s.Ingresses, ch.old)
				}
				if ch.new != nil && b.filter.serves(ch.new) {
					s.Ingresses = insertOrdered(s.Ingresses, ch.new)
				}
			}
			if len(s.Ingresses) == 0 {
				s.Ingresses = nil // as a filter of none gives
			}
		}
	} else {
		s.Ingresses = nil
		for _, ing := range b.ingOrder {
			if b.filter.serves(ing) {
				s.Ingresses = append(s.Ingresses, ing)
			}
		}
	}
	if few && !b.secrets.changed && !b.changedIngressesReferenceSecrets() {
		return // the union of references is the same
	}
	s.Secrets = referencedSecrets(s.Ingresses, b.secrets.m, b.secretRefs)
}

// changedIngressesReferenceSecrets reports whether a changed served Ingress, before or after its
// change, references a Secret that exists (the Secrets themselves did not change).
func (b *Builder) changedIngressesReferenceSecrets() bool {
	found := false
	for _, ch := range b.ingChanges {
		for _, ing := range []*networkingv1.Ingress{ch.old, ch.new} {
			if ing == nil || !b.filter.serves(ing) {
				continue
			}
			eachSecretRef(ing, b.secretRefs, func(key types.NamespacedName) {
				found = found || b.secrets.m[key] != nil
			})
		}
	}
	return found
}

// mergeServices returns prev with the dirty Services resolved again: new entries for those that
// exist, none for those that are gone, every other entry the same pointer. prev is not modified.
// Each dirty key is found by binary search and the runs between are copied whole, so one change
// among 10k Services costs a copy of 10k pointers, not 10k comparisons or map lookups.
func (b *Builder) mergeServices(prev []*Service) []*Service {
	keys := make([]types.NamespacedName, 0, len(b.dirty))
	for key := range b.dirty {
		keys = append(keys, key)
	}
	slices.SortFunc(keys, compareKeys)
	out := make([]*Service, 0, len(prev)+len(keys))
	pos := 0
	for _, key := range keys {
		i, found := slices.BinarySearchFunc(prev[pos:], key, func(e *Service, k types.NamespacedName) int { return compareKeys(e.Key(), k) })
		out = append(out, prev[pos:pos+i]...)
		pos += i
		if found {
			pos++ // the old entry is replaced or gone
		}
		if svc := b.services[key]; svc != nil {
			out = append(out, b.resolve(svc))
		}
	}
	out = append(out, prev[pos:]...)
	if len(out) == 0 {
		return nil // as NewSnapshot always gave for no Services
	}
	return out
}

// resolve joins svc with its EndpointSlices.
func (b *Builder) resolve(svc *corev1.Service) *Service {
	entry := &Service{Service: svc}
	for _, es := range b.bySvc[keyOf(svc)] {
		entry.Slices = append(entry.Slices, es)
	}
	slices.SortFunc(entry.Slices, func(a, b *discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
	entry.Endpoints = flattenEndpoints(entry.Slices)
	return entry
}

func compareKeys(a, b types.NamespacedName) int {
	return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
}

// byName re-keys cluster-scoped objects by name, in a new map.
func byName[T namespacedObject](in map[types.NamespacedName]T) map[string]T {
	out := make(map[string]T, len(in))
	for key, o := range in {
		out[key.Name] = o
	}
	return out
}

// compareIngresses is the order of Snapshot.Ingresses: oldest first, then by key.
func compareIngresses(a, b *networkingv1.Ingress) int {
	if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
		return c
	}
	return compareKeys(keyOf(a), keyOf(b))
}

func insertOrdered(list []*networkingv1.Ingress, ing *networkingv1.Ingress) []*networkingv1.Ingress {
	i, _ := slices.BinarySearchFunc(list, ing, compareIngresses)
	return slices.Insert(list, i, ing)
}

func removeOrdered(list []*networkingv1.Ingress, ing *networkingv1.Ingress) []*networkingv1.Ingress {
	if i, ok := slices.BinarySearchFunc(list, ing, compareIngresses); ok {
		return slices.Delete(list, i, i+1)
	}
	return list
}
