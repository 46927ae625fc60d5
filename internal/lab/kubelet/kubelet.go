package kubelet

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// kubelet is one node's agent while Run runs.
type kubelet struct {
	cfg  Config
	dial dialFunc

	mu       sync.Mutex
	alloc    *ipAllocator
	workers  map[types.UID]*worker
	finished map[types.UID]bool // deleted by us; ignore until the informer reports the deletion
	wg       sync.WaitGroup
}

// Run registers the node and runs the Pods bound to it until ctx ends; then it stops them and
// removes their namespaces, leaving the Pod objects for a later run. It first removes what an
// earlier run of this node left (processes, namespaces). API-server outages only delay status
// writes: containers keep running.
func Run(ctx context.Context, cfg Config) error {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("lab kubelet config: %w", err)
	}
	logger := klog.FromContext(ctx).WithValues("node", cfg.NodeName)
	ctx = klog.NewContext(ctx, logger)
	for _, d := range []string{"logs", "pids"} {
		if err := os.MkdirAll(filepath.Join(cfg.StateDir, d), 0o755); err != nil {
			return fmt.Errorf("creating state directory: %w", err)
		}
	}
	if err := killLeftovers(filepath.Join(cfg.StateDir, "pids")); err != nil {
		logger.Error(err, "Killing containers of an earlier run")
	}
	if err := Cleanup(cfg.NetnsPrefix + cfg.NodeName + "-"); err != nil {
		return fmt.Errorf("removing pod namespaces of an earlier run: %w", err)
	}
	k := &kubelet{cfg: cfg, dial: dialFrom(cfg.Netns), alloc: newIPAllocator(cfg.PodCIDRs),
		workers: map[types.UID]*worker{}, finished: map[types.UID]bool{}}

	nodeDone := make(chan struct{})
	go func() {
		defer close(nodeDone)
		k.runNode(ctx)
	}()

	factory := informers.NewSharedInformerFactoryWithOptions(cfg.Client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
		}))
	inf := factory.Core().V1().Pods().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { k.podChanged(ctx, o) },
		UpdateFunc: func(_, o any) { k.podChanged(ctx, o) },
		DeleteFunc: func(o any) { k.podDeleted(o) },
	}); err != nil {
		return fmt.Errorf("watching pods: %w", err)
	}
	factory.Start(ctx.Done())
	<-ctx.Done()
	factory.Shutdown()
	k.wg.Wait()
	<-nodeDone
	return nil
}

func (k *kubelet) podChanged(ctx context.Context, o any) {
	pod, ok := o.(*corev1.Pod)
	if !ok || pod.Spec.NodeName != k.cfg.NodeName {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.finished[pod.UID] || ctx.Err() != nil {
		return
	}
	w := k.workers[pod.UID]
	if w == nil {
		w = newWorker(k, pod)
		k.workers[pod.UID] = w
		k.wg.Go(func() { w.run(ctx) })
		return
	}
	w.setPod(pod)
}

func (k *kubelet) podDeleted(o any) {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = d.Obj
	}
	pod, ok := o.(*corev1.Pod)
	if !ok {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.finished, pod.UID)
	if w := k.workers[pod.UID]; w != nil {
		w.setGone()
	}
}

func (k *kubelet) workerDone(w *worker) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.workers, w.uid)
	if _, gone := w.snapshot(); !gone && w.terminating {
		k.finished[w.uid] = true
	}
}

func (k *kubelet) allocate(uid types.UID, preferred []netip.Addr) ([]netip.Addr, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.alloc.Allocate(uid, preferred)
}

func (k *kubelet) release(uid types.UID) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.alloc.Release(uid)
}

// event records an Event on a pod in the background, so an API outage never holds up a pod; a
// lost Event only matters to the log, as for a kubelet.
func (k *kubelet) event(pod *corev1.Pod, typ, reason, msg string) {
	go k.writeEvent(pod, typ, reason, msg)
}

func (k *kubelet) writeEvent(pod *corev1.Pod, typ, reason, msg string) {
	now := metav1.NewTime(time.Now())
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{GenerateName: pod.Name + ".", Namespace: pod.Namespace},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: pod.Namespace, Name: pod.Name,
			UID: pod.UID, ResourceVersion: pod.ResourceVersion},
		Type: typ, Reason: reason, Message: msg, Count: 1, FirstTimestamp: now, LastTimestamp: now,
		Source: corev1.EventSource{Component: "kubelet", Host: k.cfg.NodeName}, ReportingController: "kubelet",
		ReportingInstance: k.cfg.NodeName,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = k.cfg.Client.CoreV1().Events(pod.Namespace).Create(ctx, ev, metav1.CreateOptions{})
}
