package gateway

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
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

	generation atomic.Uint64
}

func newWatcher(nodeName string, withPods, withIngress bool, client kubernetes.Interface, dyn dynamic.Interface, liveness cluster.Liveness, onChange func()) *watcher {
	w := &watcher{nodeName: nodeName, withPods: withPods, client: client, dynamic: dyn, disco: client.Discovery(),
		liveness: liveness, onChange: onChange}
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

func (w *watcher) handler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { w.onChange() },
		UpdateFunc: func(any, any) { w.onChange() },
		DeleteFunc: func(any) { w.onChange() },
	}
}

// start registers handlers, starts the informers and waits for their first sync. The MetalLB
// informers join later if the CRDs appear while running.
func (w *watcher) start(ctx context.Context) error {
	for _, inf := range w.informers() {
		if _, err := inf.AddEventHandler(w.handler()); err != nil {
			return fmt.Errorf("adding event handler: %w", err)
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
	var synced []cache.InformerSynced
	for _, inf := range w.informers() {
		synced = append(synced, inf.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return fmt.Errorf("waiting for informer caches to sync: %w", ctx.Err())
	}
	return nil
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
	for _, inf := range []cache.SharedIndexInformer{w.pools, w.l2s} {
		if _, err := inf.AddEventHandler(w.handler()); err != nil {
			klog.FromContext(ctx).Error(err, "Adding MetalLB event handler")
		}
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

// snapshot lists the caches into a new Snapshot.
func (w *watcher) snapshot(ctx context.Context) *cluster.Snapshot {
	in := cluster.Inputs{
		NodeName:       w.nodeName,
		Services:       list[*corev1.Service](w.services),
		EndpointSlices: list[*discoveryv1.EndpointSlice](w.slices),
		Nodes:          list[*corev1.Node](w.nodes),
		Namespaces:     list[*corev1.Namespace](w.namespaces),
		Ingresses:      list[*networkingv1.Ingress](w.ingresses),
		IngressClasses: list[*networkingv1.IngressClass](w.classes),
		Secrets:        list[*corev1.Secret](w.tlsSecrets),
		// The ingress package knows which annotations name a Secret; the snapshot keeps those.
		IngressSecretRefs: annotations.SecretRefs,
	}
	if w.pods != nil {
		in.Pods = list[*corev1.Pod](w.pods)
	}
	if w.authSecret != nil {
		in.Secrets = append(in.Secrets, list[*corev1.Secret](w.authSecret)...)
	}
	w.metallbMu.Lock()
	pools, l2s := w.pools, w.l2s
	w.metallbMu.Unlock()
	if pools != nil && pools.HasSynced() && l2s.HasSynced() {
		in.Pools = convertAll[metallbv1beta1.IPAddressPool](ctx, pools)
		in.L2Advertisements = convertAll[metallbv1beta1.L2Advertisement](ctx, l2s)
	}
	if w.liveness != nil {
		in.LiveNodes = w.liveness.LiveNodes()
	}
	return cluster.NewSnapshot(w.generation.Add(1), time.Now(), in)
}

func list[T runtime.Object](inf cache.SharedIndexInformer) []T {
	objs := inf.GetStore().List()
	out := make([]T, 0, len(objs))
	for _, o := range objs {
		if t, ok := o.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

// convertAll turns the dynamic informer's unstructured objects into MetalLB's typed objects; an
// object that does not convert is logged and left out rather than failing the snapshot.
func convertAll[T any, PT interface {
	*T
	metav1.Object
}](ctx context.Context, inf cache.SharedIndexInformer) []PT {
	var out []PT
	for _, o := range inf.GetStore().List() {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		obj := PT(new(T))
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, obj); err != nil {
			klog.FromContext(ctx).Error(err, "Ignoring malformed MetalLB object", "kind", u.GetKind(), "object", klog.KObj(u))
			continue
		}
		out = append(out, obj)
	}
	return out
}

// synced reports whether every informer has completed its first list.
func (w *watcher) synced() bool {
	for _, inf := range w.informers() {
		if !inf.HasSynced() {
			return false
		}
	}
	return true
}
