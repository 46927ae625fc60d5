package cluster

import (
	"cmp"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"time"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Names baregate answers to in the API (see shared/DESIGN.md).
const (
	// IngressController is the spec.controller of IngressClasses baregate serves.
	IngressController = "baregate.io/ingress"
	// LoadBalancerClass is the spec.loadBalancerClass baregate serves besides the unset default.
	LoadBalancerClass = "baregate.io/lb"
	// LegacyIngressClassAnnotation is the pre-IngressClass way to pick a controller, by class name.
	LegacyIngressClassAnnotation = "kubernetes.io/ingress.class"
	// DefaultIngressClassAnnotation marks the IngressClass used by Ingresses that name none.
	DefaultIngressClassAnnotation = "ingressclass.kubernetes.io/is-default-class"
)

// Snapshot is one consistent, read-only view of the cluster as this node's gateway sees it. Every
// object it points to is shared with the informer caches and with other components: never mutate one.
//
// Contract for components (what makes a cheap incremental Build possible): the gateway makes every
// snapshot with one Builder, which shares with the previous snapshot whatever did not change, so a
// component may compare what it saw last (any earlier snapshot, not only the one before) with the
// new one by identity:
//   - a *Service entry is the same pointer as long as its Service object and its EndpointSlices
//     are the same objects; any change to either gives a new entry (ServicesChanged lists them);
//   - every Kubernetes object (Service, EndpointSlice, Ingress, Secret, Node ...) is the informer's
//     object, the same pointer until the object changes in the API;
//   - a collection (Services, Ingresses, IngressClasses, Pools and L2Advertisements slices; Nodes,
//     Pods, Namespaces, Secrets maps; LiveNodes) is the same slice or map as long as nothing of its
//     kind changed (SameSlice and SameMap test that in O(1)).
//
// Identity means unchanged; a new pointer means only "maybe changed" (an update that changed
// nothing still gives one), so a component must stay correct if it rebuilds more than needed.
type Snapshot struct {
	// Generation increases by one with each snapshot the gateway builds.
	Generation uint64
	// Taken is when the snapshot was built.
	Taken time.Time
	// NodeName is the node this gateway runs on.
	NodeName string

	// Services holds every Service (all types and classes: forwarding needs them all), sorted by key.
	Services []*Service
	// Nodes by name.
	Nodes map[string]*corev1.Node
	// Pods by key; only pods the gateway watches (those backing endpoints may be missing on big clusters).
	Pods map[types.NamespacedName]*corev1.Pod
	// Namespaces by name: their labels pick IP pools (IPAddressPool namespaceSelectors).
	Namespaces map[string]*corev1.Namespace

	// Ingresses holds only the Ingresses baregate serves, sorted by creation time then key, so that on a
	// conflict the oldest comes first.
	Ingresses []*networkingv1.Ingress
	// IngressClasses holds only the classes whose controller is IngressController.
	IngressClasses []*networkingv1.IngressClass
	// Secrets holds the Secrets that served Ingresses reference, by key: spec.tls certificates and
	// those their annotations name (Inputs.IngressSecretRefs, e.g. the basic-auth Secret).
	Secrets map[types.NamespacedName]*corev1.Secret

	// Pools and L2Advertisements are MetalLB's objects; empty when those CRDs are not installed.
	Pools            []*metallbv1beta1.IPAddressPool
	L2Advertisements []*metallbv1beta1.L2Advertisement

	// LiveNodes is the gossip's view of which nodes run a live gateway. Nil means no view yet (no gossip
	// running), in which case every node counts as live.
	LiveNodes map[string]bool
}

// Service is a Service with the EndpointSlices that belong to it, resolved.
type Service struct {
	*corev1.Service
	// Slices are the EndpointSlices labelled with this Service's name, sorted by name.
	Slices []*discoveryv1.EndpointSlice
	// Endpoints flattens Slices: one entry per address family and endpoint, duplicates (the same
	// address in two slices during a slice move) merged, sorted by address.
	Endpoints []Endpoint
}

// Key is the Service's namespace/name.
func (s *Service) Key() types.NamespacedName {
	return types.NamespacedName{Namespace: s.Namespace, Name: s.Name}
}

// Endpoint is one backend address of a Service.
type Endpoint struct {
	Addr netip.Addr
	// Ports are the ports of the slice the endpoint came from: a named target port can resolve to
	// different numbers on different endpoints, so ports belong to the endpoint, not the Service.
	Ports    []discoveryv1.EndpointPort
	NodeName string
	Zone     string
	// ZoneHints are the topology hints' zones; empty when the slice carries none.
	ZoneHints []string
	// Ready, Serving and Terminating are the EndpointConditions with the API's defaults applied
	// (an unset ready or serving means true, an unset terminating false).
	Ready, Serving, Terminating bool
	// Pod is the backing Pod, when the target is a Pod.
	Pod *types.NamespacedName
}

// Port returns the endpoint's port number for the Service port named name (empty for the single
// unnamed port) and protocol, and whether the slice lists it.
func (e *Endpoint) Port(name string, proto corev1.Protocol) (int32, bool) {
	for _, p := range e.Ports {
		pn, pp := "", corev1.ProtocolTCP
		if p.Name != nil {
			pn = *p.Name
		}
		if p.Protocol != nil {
			pp = *p.Protocol
		}
		if pn == name && pp == proto && p.Port != nil {
			return *p.Port, true
		}
	}
	return 0, false
}

// Service returns the Service with this key, or nil.
func (s *Snapshot) Service(key types.NamespacedName) *Service {
	// A binary search rather than a map: an index would have to be rebuilt (10k entries) for every
	// snapshot in which any Service changed.
	i, ok := slices.BinarySearchFunc(s.Services, key, func(e *Service, k types.NamespacedName) int { return compareKeys(e.Key(), k) })
	if !ok {
		return nil
	}
	return s.Services[i]
}

// ServicesChanged returns the keys of the Services that differ between prev and s: added, removed,
// or with a new entry (see the contract on Snapshot). It walks both sorted lists once and returns
// nil at once when the lists are the same. A nil prev counts as empty.
func (s *Snapshot) ServicesChanged(prev *Snapshot) []types.NamespacedName {
	var old []*Service
	if prev != nil {
		old = prev.Services
	}
	if SameSlice(old, s.Services) {
		return nil
	}
	var out []types.NamespacedName
	i, j := 0, 0
	for i < len(old) || j < len(s.Services) {
		var c int
		switch {
		case i == len(old):
			c = 1
		case j == len(s.Services):
			c = -1
		default:
			c = compareKeys(old[i].Key(), s.Services[j].Key())
		}
		switch {
		case c < 0:
			out = append(out, old[i].Key())
			i++
		case c > 0:
			out = append(out, s.Services[j].Key())
			j++
		default:
			if old[i] != s.Services[j] {
				out = append(out, old[i].Key())
			}
			i, j = i+1, j+1
		}
	}
	return out
}

// SameSlice reports whether a and b are the same slice (same array, same length): for a
// Snapshot's slices, that nothing of their kind changed between two snapshots.
func SameSlice[T any](a, b []T) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// SameMap reports whether a and b are the same map: for a Snapshot's maps, that nothing of their
// kind changed between two snapshots.
func SameMap[K comparable, V any](a, b map[K]V) bool {
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

// NodeLive reports whether the gossip considers node's gateway live (true when there is no gossip view).
func (s *Snapshot) NodeLive(node string) bool {
	if s.LiveNodes == nil {
		return true
	}
	return s.LiveNodes[node]
}

// LoadBalancers returns the LoadBalancer Services whose IPs baregate allocates and announces: class
// unset or LoadBalancerClass. Services of other load-balancer implementations are left out.
func (s *Snapshot) LoadBalancers() []*Service {
	var out []*Service
	for _, svc := range s.Services {
		if IsOurLoadBalancer(svc.Service) {
			out = append(out, svc)
		}
	}
	return out
}

// IsOurLoadBalancer reports whether svc is a LoadBalancer Service of baregate's class.
func IsOurLoadBalancer(svc *corev1.Service) bool {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return false
	}
	return svc.Spec.LoadBalancerClass == nil || *svc.Spec.LoadBalancerClass == LoadBalancerClass
}

// Inputs is what a snapshot is built from: plain object lists, as listers return them.
type Inputs struct {
	NodeName         string
	Services         []*corev1.Service
	EndpointSlices   []*discoveryv1.EndpointSlice
	Nodes            []*corev1.Node
	Pods             []*corev1.Pod
	Namespaces       []*corev1.Namespace
	Ingresses        []*networkingv1.Ingress
	IngressClasses   []*networkingv1.IngressClass
	Secrets          []*corev1.Secret
	Pools            []*metallbv1beta1.IPAddressPool
	L2Advertisements []*metallbv1beta1.L2Advertisement
	LiveNodes        map[string]bool
	// IngressSecretRefs names the Secrets an Ingress reads besides its spec.tls ones (the annotations'
	// basic-auth Secret, say). The rules belong to the ingress package; a func keeps this one free of
	// it. Nil means spec.tls only.
	IngressSecretRefs func(*networkingv1.Ingress) []types.NamespacedName
}

// NewSnapshot resolves in into one consistent view: slices joined to their Services, Ingresses and
// IngressClasses filtered to baregate's, Secrets filtered to those served Ingresses reference. It is
// a Builder's first Build; the gateway keeps its Builder to make later snapshots incrementally.
func NewSnapshot(generation uint64, taken time.Time, in Inputs) *Snapshot {
	b := NewBuilder(in.NodeName, in.IngressSecretRefs)
	for _, list := range [][]any{anys(in.Services), anys(in.EndpointSlices), anys(in.Nodes), anys(in.Pods),
		anys(in.Namespaces), anys(in.Ingresses), anys(in.IngressClasses), anys(in.Secrets), anys(in.Pools),
		anys(in.L2Advertisements)} {
		for _, obj := range list {
			b.Set(obj)
		}
	}
	b.SetLiveNodes(in.LiveNodes)
	return b.Build(generation, taken)
}

func anys[T any](in []T) []any {
	out := make([]any, len(in))
	for i, o := range in {
		out[i] = o
	}
	return out
}

// referencedSecrets keeps the Secrets of all that served names: its spec.tls Secrets, always in the
// Ingress's own namespace, and those refs (may be nil) returns for it. A missing Secret is left out.
func referencedSecrets(served []*networkingv1.Ingress, all map[types.NamespacedName]*corev1.Secret, refs func(*networkingv1.Ingress) []types.NamespacedName) map[types.NamespacedName]*corev1.Secret {
	out := map[types.NamespacedName]*corev1.Secret{}
	for _, ing := range served {
		eachSecretRef(ing, refs, func(key types.NamespacedName) {
			if sec := all[key]; sec != nil {
				out[key] = sec
			}
		})
	}
	return out
}

// eachSecretRef calls fn with each Secret ing references (named, though it may not exist).
func eachSecretRef(ing *networkingv1.Ingress, refs func(*networkingv1.Ingress) []types.NamespacedName, fn func(types.NamespacedName)) {
	for _, tls := range ing.Spec.TLS {
		if tls.SecretName != "" {
			fn(types.NamespacedName{Namespace: ing.Namespace, Name: tls.SecretName})
		}
	}
	if refs != nil {
		for _, key := range refs(ing) {
			if key.Name != "" {
				fn(key)
			}
		}
	}
}

// ingressFilter says which Ingresses baregate serves, given the cluster's IngressClasses.
type ingressFilter struct {
	ours           map[string]bool
	serveClassless bool
}

// newIngressFilter returns baregate's IngressClasses, sorted by name, and the filter they make.
func newIngressFilter(classes []*networkingv1.IngressClass) ([]*networkingv1.IngressClass, ingressFilter) {
	f := ingressFilter{ours: map[string]bool{}}
	var ourClasses []*networkingv1.IngressClass
	defaultIsOurs, otherDefault := false, false
	for _, c := range sortedByKey(classes) {
		isDefault := c.Annotations[DefaultIngressClassAnnotation] == "true"
		if c.Spec.Controller != IngressController {
			otherDefault = otherDefault || isDefault
			continue
		}
		f.ours[c.Name] = true
		ourClasses = append(ourClasses, c)
		defaultIsOurs = defaultIsOurs || isDefault
	}
	// With several default classes the API server refuses class-less Ingresses unless one is ours;
	// we serve them only when the default is unambiguously ours.
	f.serveClassless = defaultIsOurs && !otherDefault
	return ourClasses, f
}

// serves reports whether ing selects one of our classes: by spec.ingressClassName, by the legacy
// annotation naming the class, or by naming none while one of our classes is the cluster default.
func (f ingressFilter) serves(ing *networkingv1.Ingress) bool {
	switch {
	case ing.Spec.IngressClassName != nil:
		return f.ours[*ing.Spec.IngressClassName]
	case ing.Annotations[LegacyIngressClassAnnotation] != "":
		return f.ours[ing.Annotations[LegacyIngressClassAnnotation]]
	default:
		return f.serveClassless
	}
}

func flattenEndpoints(slices_ []*discoveryv1.EndpointSlice) []Endpoint {
	seen := map[netip.Addr]int{}
	var out []Endpoint
	for _, es := range slices_ {
		if es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6 {
			continue // FQDN slices are not forwarded to, as in kube-proxy
		}
		for _, ep := range es.Endpoints {
			e := Endpoint{
				Ports:       es.Ports,
				Ready:       ep.Conditions.Ready == nil || *ep.Conditions.Ready,
				Serving:     ep.Conditions.Serving == nil || *ep.Conditions.Serving,
				Terminating: ep.Conditions.Terminating != nil && *ep.Conditions.Terminating,
			}
			if ep.NodeName != nil {
				e.NodeName = *ep.NodeName
			}
			if ep.Zone != nil {
				e.Zone = *ep.Zone
			}
			if ep.Hints != nil {
				for _, z := range ep.Hints.ForZones {
					e.ZoneHints = append(e.ZoneHints, z.Name)
				}
			}
			if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" {
				e.Pod = &types.NamespacedName{Namespace: ep.TargetRef.Namespace, Name: ep.TargetRef.Name}
				if e.Pod.Namespace == "" {
					e.Pod.Namespace = es.Namespace
				}
			}
			for _, a := range ep.Addresses {
				addr, err := netip.ParseAddr(a)
				if err != nil {
					continue
				}
				e.Addr = addr.Unmap()
				if i, dup := seen[e.Addr]; dup {
					// The same endpoint in two slices: keep the readier view.
					if e.Ready && !out[i].Ready {
						out[i] = e
					}
					continue
				}
				seen[e.Addr] = len(out)
				out = append(out, e)
			}
		}
	}
	slices.SortFunc(out, func(a, b Endpoint) int { return a.Addr.Compare(b.Addr) })
	return out
}

type namespacedObject interface {
	GetNamespace() string
	GetName() string
}

func sortedByKey[T namespacedObject](in []T) []T {
	out := slices.Clone(in)
	slices.SortFunc(out, func(a, b T) int {
		return cmp.Or(strings.Compare(a.GetNamespace(), b.GetNamespace()), strings.Compare(a.GetName(), b.GetName()))
	})
	return out
}
