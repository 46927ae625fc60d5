package kubelet

import (
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

// RunBinder stands in for the scheduler until ctx ends: it binds every unscheduled Pod of the
// default scheduler to one of nodes, the one its nodeSelector names by kubernetes.io/hostname,
// else round-robin.
func RunBinder(ctx context.Context, client kubernetes.Interface, nodes []string) error {
	if len(nodes) == 0 {
		return fmt.Errorf("binder needs at least one node")
	}
	logger := klog.FromContext(ctx).WithName("binder")
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", "").String()
		}))
	inf := factory.Core().V1().Pods().Informer()
	queue := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[cache.ObjectName]())
	enqueue := func(o any) {
		if p, ok := o.(*corev1.Pod); ok {
			queue.Add(cache.MetaObjectToName(p))
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(_, o any) { enqueue(o) }}); err != nil {
		return fmt.Errorf("watching unscheduled pods: %w", err)
	}
	factory.Start(ctx.Done())
	go func() {
		<-ctx.Done()
		queue.ShutDown()
	}()
	next := 0
	for {
		name, quit := queue.Get()
		if quit {
			factory.Shutdown()
			return nil
		}
		obj, exists, err := inf.GetIndexer().GetByKey(name.String())
		pod, _ := obj.(*corev1.Pod)
		if err != nil || !exists || pod == nil || !bindable(pod) {
			queue.Forget(name)
			queue.Done(name)
			continue
		}
		node := chooseNode(pod, nodes, &next)
		err = client.CoreV1().Pods(pod.Namespace).Bind(ctx, &corev1.Binding{
			ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
			Target:     corev1.ObjectReference{Kind: "Node", Name: node},
		}, metav1.CreateOptions{})
		if err != nil && ctx.Err() == nil {
			logger.Error(err, "Binding pod", "pod", klog.KObj(pod), "node", node)
			queue.AddRateLimited(name)
		} else {
			logger.V(2).Info("Bound pod", "pod", klog.KObj(pod), "node", node)
			queue.Forget(name)
		}
		queue.Done(name)
	}
}

// bindable reports whether the default scheduler would place pod.
func bindable(pod *corev1.Pod) bool {
	return pod.Spec.NodeName == "" && pod.DeletionTimestamp == nil &&
		(pod.Spec.SchedulerName == "" || pod.Spec.SchedulerName == corev1.DefaultSchedulerName)
}

// chooseNode honours a kubernetes.io/hostname nodeSelector and otherwise goes round-robin.
func chooseNode(pod *corev1.Pod, nodes []string, next *int) string {
	if want := pod.Spec.NodeSelector["kubernetes.io/hostname"]; want != "" && slices.Contains(nodes, want) {
		return want
	}
	n := nodes[*next%len(nodes)]
	*next++
	return n
}
