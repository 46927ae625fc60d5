package gateway

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/baregate/baregate/ingress/annotations"
	"github.com/baregate/baregate/internal/cluster"
)

var (
	poolsGVR = metallbv1beta1.GroupVersion.WithResource("ipaddresspools")
	l2GVR    = metallbv1beta1.GroupVersion.WithResource("l2advertisements")
)

// watcher owns the informers and turns their caches into Snapshots. It is the only reader of the
// informer caches; components see the cluster only through the Snapshots it publishes.
type watcher struct {
	nodeName string
	withPods bool
	client   kubernetes.Interface
	dynamic  dynamic.Interface
	disco    discovery.DiscoveryInterface
	liveness cluster.Liveness // nil when no component gossips
	onChange func()           // called (must not block) on every informer event

	factory informers.SharedInformerFactory
	secrets informers.SharedInformerFactory // TLS Secrets only
	opaque  informers.SharedInformerFactory // Opaque Secrets only; nil without the ingress
	dynFact dynamicinformer.DynamicSharedInformerFactory

	services   cache.SharedIndexInformer
	slices     cache.SharedIndexInformer
	nodes      cache.SharedIndexInformer
	pods       cache.SharedIndexInformer
	namespaces cache.SharedIndexInformer
	ingresses  cache.SharedIndexInformer
	classes    cache.SharedIndexInformer
	tlsSecrets cache.SharedIndexInformer
	authSecret cache.SharedIndexInformer // nil without the ingress

	metallbMu sync.Mutex
	pools     cache.SharedIndexInformer // nil until the MetalLB CRDs are seen
	l2s       cache.SharedIndexInformer
	// handlersSynced report whether each event handler has been told of every object of its
	// informer's first list: the snapshot learns objects only through them, so a snapshot taken
	// before would miss objects (and nodeport would withdraw their rules).
	handlersSynced []cache.InformerSynced
	metallbSynced  []cache.InformerSynced // the MetalLB informers' handlers, once started

	generation atomic.Uint64

	// changes collects which objects changed since the last snapshot; only the snapshot's
	// Builder reads the caches, and only for those keys.
	changes changes
	builder *cluster.Builder // used only by snapshot (the snapshot Runner's sync)
}

func newWatcher(nodeName string, withPods, withIngress bool, client kubernetes.Interface, dyn dynamic.Interface, liveness cluster.Liveness, onChange func()) *watcher {
	w := &watcher{nodeName: nodeName, withPods: withPods, client: client, dynamic: dyn, disco: client.Discovery(),
		liveness: liveness, onChange: onChange,
		// The ingress package knows which annotations name a Secret; the snapshot keeps those.
		builder: cluster.NewBuilder(nodeName, annotations.SecretRefs)}
	// No periodic resync: every change arrives as an event, and components re-apply on their own.
	w.factory = informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTransform(stripManagedFields))
	w.secrets = informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTransform(stripManagedFields),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = "type=" + string(corev1.SecretTypeTLS)
		}))
	if withIngress {
		// ingress-nginx's basic-auth Secrets (nginx.ingress.kubernetes.io/auth-secret) are type Opaque.
		// The API has no selector for "referenced by an Ingress", so this caches every Opaque Secret;
		// the type selector at least leaves out service-account tokens, Helm releases and registry
		// credentials, usually most of a cluster's Secrets, and managedFields are stripped. Getting
		// each referenced Secret on demand would save that memory but needs its own watch to see
		// password changes. RBAC is unchanged: a field selector does not narrow it, so the
		// ClusterRole's get/list/watch on secrets already covers this informer.
		w.opaque = informers.NewSharedInformerFactoryWithOptions(client, 0,
			informers.WithTransform(stripManagedFields),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.FieldSelector = "type=" + string(corev1.SecretTypeOpaque)
			}))
		w.authSecret = w.opaque.Core().V1().Secrets().Informer()
	}
	w.dynFact = dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0)

	w.services = w.factory.Core().V1().Services().Informer()
	w.slices = w.factory.Discovery().V1().EndpointSlices().Informer()
	w.nodes = w.factory.Core().V1().Nodes().Informer()
	w.namespaces = w.factory.Core().V1().Namespaces().Informer()
	w.ingresses = w.factory.Networking().V1().Ingresses().Informer()
	w.classes = w.factory.Networking().V1().IngressClasses().Informer()
	w.tlsSecrets = w.secrets.Core().V1().Secrets().Informer()
	if withPods {
		w.pods = w.factory.Core().V1().Pods().Informer()
	}
	return w
}

// stripManagedFields drops managedFields from cached objects: nothing reads them and at 10k+
// objects they are a large share of the cache's memory.
func stripManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// handler records which object of kind changed and asks for a snapshot. It only notes the key:
// the snapshot reads the object from the cache then, so a burst of updates to one object costs one
// lookup, and a delete followed by a re-create is seen as what it ended as.
func (w *watcher) handler(kind cluster.Kind) cache.ResourceEventHandler {
	note := func(obj any) {
		key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
		if err != nil {
			return
		}
		w.changes.note(kind, key)
		w.onChange()
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { note(obj) },
		UpdateFunc: func(_, obj any) { note(obj) },
		DeleteFunc: note,
	}
}

// start registers handlers, starts the informers and waits for their first sync. The MetalLB
// informers join later if the CRDs appear while running.
func (w *watcher) start(ctx context.Context) error {
	for kind, infs := range w.sources() {
		for _, inf := range infs {
			reg, err := inf.AddEventHandler(w.handler(kind))
			if err != nil {
				return fmt.Errorf("adding event handler: %w", err)
			}
			w.metallbMu.Lock()
			w.handlersSynced = append(w.handlersSynced, reg.HasSynced)
			w.metallbMu.Unlock()
		}
	}
	w.factory.Start(ctx.Done())
	w.secrets.Start(ctx.Done())
	if w.opaque != nil {
		w.opaque.Start(ctx.Done())
	}
	w.startMetalLB(ctx)
	go w.watchCRDs(ctx)
	if w.liveness != nil {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-w.liveness.Changed():
					w.onChange()
				}
			}
		}()
	}
	if !cache.WaitForCacheSync(ctx.Done(), w.synced) {
		return fmt.Errorf("waiting for informer caches to sync: %w", ctx.Err())
	}
	return nil
}

// sources are the informers whose objects make up each kind of the snapshot, MetalLB's left out
// (they start later).
func (w *watcher) sources() map[cluster.Kind][]cache.SharedIndexInformer {
	out := map[cluster.Kind][]cache.SharedIndexInformer{
		cluster.KindService:       {w.services},
		cluster.KindEndpointSlice: {w.slices},
		cluster.KindNode:          {w.nodes},
		cluster.KindNamespace:     {w.namespaces},
		cluster.KindIngress:       {w.ingresses},
		cluster.KindIngressClass:  {w.classes},
		cluster.KindSecret:        {w.tlsSecrets},
	}
	if w.pods != nil {
		out[cluster.KindPod] = []cache.SharedIndexInformer{w.pods}
	}
	if w.authSecret != nil {
		out[cluster.KindSecret] = append(out[cluster.KindSecret], w.authSecret)
	}
	return out
}

func (w *watcher) informers() []cache.SharedIndexInformer {
	out := []cache.SharedIndexInformer{w.services, w.slices, w.nodes, w.namespaces, w.ingresses, w.classes, w.tlsSecrets}
	if w.pods != nil {
		out = append(out, w.pods)
	}
	if w.authSecret != nil {
		out = append(out, w.authSecret)
	}
	w.metallbMu.Lock()
	defer w.metallbMu.Unlock()
	if w.pools != nil {
		out = append(out, w.pools, w.l2s)
	}
	return out
}

// metallbServed reports whether the API server serves MetalLB's IPAddressPool and L2Advertisement.
func (w *watcher) metallbServed() (bool, error) {
	list, err := w.disco.ServerResourcesForGroupVersion(metallbv1beta1.GroupVersion.String())
	if err != nil {
		return false, err
	}
	found := 0
	for _, r := range list.APIResources {
		if r.Name == poolsGVR.Resource || r.Name == l2GVR.Resource {
			found++
		}
	}
	return found == 2, nil
}

// startMetalLB starts the pool informers once the CRDs exist. Clusters without MetalLB's CRDs are
// fine: they simply have no pools, and nothing waits for them.
func (w *watcher) startMetalLB(ctx context.Context) bool {
	w.metallbMu.Lock()
	defer w.metallbMu.Unlock()
	if w.pools != nil {
		return true
	}
	ok, err := w.metallbServed()
	if !ok {
		klog.FromContext(ctx).V(2).Info("MetalLB CRDs not served; no address pools", "err", err)
		return false
	}
	w.pools = w.dynFact.ForResource(poolsGVR).Informer()
	w.l2s = w.dynFact.ForResource(l2GVR).Informer()
	for kind, inf := range map[cluster.Kind]cache.SharedIndexInformer{cluster.KindPool: w.pools, cluster.KindL2Advertisement: w.l2s} {
		reg, err := inf.AddEventHandler(w.handler(kind))
		if err != nil {
			klog.FromContext(ctx).Error(err, "Adding MetalLB event handler")
			continue
		}
		w.metallbSynced = append(w.metallbSynced, reg.HasSynced)
	}
	w.dynFact.Start(ctx.Done())
	klog.FromContext(ctx).Info("Watching MetalLB IPAddressPools and L2Advertisements")
	return true
}

func (w *watcher) watchCRDs(ctx context.Context) {
	t := time.NewTicker(15 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if w.startMetalLB(ctx) {
				w.onChange()
				return
			}
		}
	}
}

// snapshot hands the Builder the objects that changed since the last snapshot, read from the
// caches, and builds the next Snapshot: the cost follows the changes, not the cluster's size. It
// also returns when the oldest informer event the snapshot includes arrived (zero if none).
func (w *watcher) snapshot(ctx context.Context) (*cluster.Snapshot, time.Time) {
	sources := w.sources()
	w.metallbMu.Lock()
	if w.pools != nil && allSynced(w.metallbSynced) {
		// Half-listed pools would look like deleted ones to the allocator: wait for both lists.
		sources[cluster.KindPool] = []cache.SharedIndexInformer{w.pools}
		sources[cluster.KindL2Advertisement] = []cache.SharedIndexInformer{w.l2s}
	}
	w.metallbMu.Unlock()
	changed, since := w.changes.take(sources)
	for kind, keys := range changed {
		for _, key := range keys {
			w.apply(ctx, kind, key, sources[kind])
		}
	}
	if w.liveness != nil {
		w.builder.SetLiveNodes(w.liveness.LiveNodes())
	}
	return w.builder.Build(w.generation.Add(1), time.Now()), since
}

// apply sets the object of kind and key from the first informer that holds it, or deletes it when
// none does: a Secret recreated with another type moves between the Secret informers.
func (w *watcher) apply(ctx context.Context, kind cluster.Kind, key string, infs []cache.SharedIndexInformer) {
	for _, inf := range infs {
		obj, ok, err := inf.GetStore().GetByKey(key)
		if err != nil || !ok {
			continue
		}
		if u, isU := obj.(*unstructured.Unstructured); isU {
			if obj, err = convert(kind, u); err != nil {
				klog.FromContext(ctx).Error(err, "Ignoring malformed MetalLB object", "kind", u.GetKind(), "object", klog.KObj(u))
				break // as if it did not exist
			}
		}
		w.builder.Set(obj)
		return
	}
	ns, name, _ := cache.SplitMetaNamespaceKey(key)
	w.builder.Delete(kind, types.NamespacedName{Namespace: ns, Name: name})
}

// convert turns the dynamic informer's unstructured MetalLB objects into MetalLB's typed ones.
func convert(kind cluster.Kind, u *unstructured.Unstructured) (any, error) {
	var obj any
	switch kind {
	case cluster.KindPool:
		obj = &metallbv1beta1.IPAddressPool{}
	case cluster.KindL2Advertisement:
		obj = &metallbv1beta1.L2Advertisement{}
	default:
		return nil, fmt.Errorf("no typed object for kind %d", kind)
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, obj); err != nil {
		return nil, err
	}
	return obj, nil
}

// changes is the set of object keys, by kind, that changed since the last snapshot.
type changes struct {
	mu     sync.Mutex
	byKind map[cluster.Kind]map[string]bool
	since  time.Time // when the oldest noted change arrived
}

func (c *changes) note(kind cluster.Kind, key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.since.IsZero() {
		c.since = time.Now()
	}
	if c.byKind == nil {
		c.byKind = map[cluster.Kind]map[string]bool{}
	}
	if c.byKind[kind] == nil {
		c.byKind[kind] = map[string]bool{}
	}
	c.byKind[kind][key] = true
}

// take removes and returns the changed keys of the kinds in sources, and when the oldest change
// arrived; the other kinds' stay noted until their informers are ready.
func (c *changes) take(sources map[cluster.Kind][]cache.SharedIndexInformer) (map[cluster.Kind][]string, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	since := c.since
	c.since = time.Time{}
	out := map[cluster.Kind][]string{}
	for kind, keys := range c.byKind {
		if _, ok := sources[kind]; !ok {
			continue
		}
		for key := range keys {
			out[kind] = append(out[kind], key)
		}
		delete(c.byKind, kind)
	}
	if len(c.byKind) > 0 {
		c.since = time.Now() // what stays was waiting, but is not in this snapshot
	}
	return out, since
}

// synced reports whether every informer has completed its first list and every event handler has
// been told of it.
func (w *watcher) synced() bool {
	for _, inf := range w.informers() {
		if !inf.HasSynced() {
			return false
		}
	}
	w.metallbMu.Lock()
	defer w.metallbMu.Unlock()
	return allSynced(w.handlersSynced) && allSynced(w.metallbSynced)
}

func allSynced(fns []cache.InformerSynced) bool {
	for _, f := range fns {
		if !f() {
			return false
		}
	}
	return true
}
