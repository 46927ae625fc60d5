package lbip

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"time"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/klog/v2"
)

// Each gateway publishes, for the Services whose IP it announces, a MetalLB ServiceL2Status object
// in its own namespace, as MetalLB's speaker does since v0.14 (same labels, name prefix and status),
// so tools and users that read those keep working. The baregate.io/announced-by annotation stays
// for kubectl get svc and the dashboard.

// MetalLB's labels on a ServiceL2Status.
const (
	LabelL2Node             = "metallb.io/node"
	LabelL2ServiceName      = "metallb.io/service-name"
	LabelL2ServiceNamespace = "metallb.io/service-namespace"
)

var serviceL2StatusGVR = schema.GroupVersionResource{Group: "metallb.io", Version: "v1beta1", Resource: "servicel2statuses"}

// l2StatusRetry is how long a gateway waits before trying again to write ServiceL2Status objects
// after finding their CRD not installed.
const l2StatusRetry = 5 * time.Minute

// desiredL2Status returns, for each Service with an IP this node (self) announces, the status MetalLB's
// speaker would publish: the node, the Service, and the interfaces when the L2Advertisement restricts
// them (none listed means all). announced maps each IP answered for to its interfaces.
func desiredL2Status(assign []Assignment, announced map[netip.Addr][]string, self string) map[types.NamespacedName]metallbv1beta1.MetalLBServiceL2Status {
	out := map[types.NamespacedName]metallbv1beta1.MetalLBServiceL2Status{}
	for _, a := range assign {
		ifaces := announced[a.IP]
		if a.Node != self || len(ifaces) == 0 {
			continue
		}
		for _, key := range a.Services {
			if _, done := out[key]; done {
				continue
			}
			st := metallbv1beta1.MetalLBServiceL2Status{Node: self, ServiceName: key.Name, ServiceNamespace: key.Namespace}
			if a.Interfaces != nil {
				for _, i := range ifaces {
					st.Interfaces = append(st.Interfaces, metallbv1beta1.InterfaceInfo{Name: i})
				}
			}
			out[key] = st
		}
	}
	return out
}

// l2StatusWriter keeps this node's ServiceL2Status objects in step with what it announces. It is
// used from one goroutine.
type l2StatusWriter struct {
	dyn       dynamic.Interface
	namespace string
	node      string

	// written maps each Service to the object this node keeps for it; valid once listed.
	written map[types.NamespacedName]writtenL2Status
	listed  bool
	// skipUntil is set when the CRD is not installed.
	skipUntil time.Time
}

type writtenL2Status struct {
	name   string
	status metallbv1beta1.MetalLBServiceL2Status
}

func newL2StatusWriter(dyn dynamic.Interface, namespace, node string) *l2StatusWriter {
	return &l2StatusWriter{dyn: dyn, namespace: namespace, node: node, written: map[types.NamespacedName]writtenL2Status{}}
}

// apply creates, updates and deletes this node's objects to match desired, and deletes the objects
// that gateways which are not live (live) left for the Services this node now announces.
func (w *l2StatusWriter) apply(ctx context.Context, desired map[types.NamespacedName]metallbv1beta1.MetalLBServiceL2Status, live map[string]bool) error {
	if w.dyn == nil || time.Now().Before(w.skipUntil) {
		return nil
	}
	res := w.dyn.Resource(serviceL2StatusGVR).Namespace(w.namespace)
	if !w.listed {
		if err := w.list(ctx, res); err != nil {
			return w.notInstalled(ctx, err)
		}
	}
	var errs []error
	for key, st := range desired {
		cur, ok := w.written[key]
		if ok && reflect.DeepEqual(cur.status, st) {
			continue
		}
		if !ok {
			name, err := w.create(ctx, res, key)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			cur = writtenL2Status{name: name}
			w.written[key] = cur
			if err := w.deleteStale(ctx, res, key, live); err != nil {
				errs = append(errs, err)
			}
		}
		patch, err := json.Marshal(map[string]any{"status": st})
		if err != nil {
			return err
		}
		if _, err := res.Patch(ctx, cur.name, types.MergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
			if apierrors.IsNotFound(err) {
				delete(w.written, key) // deleted behind our back: create it again next time
			}
			errs = append(errs, fmt.Errorf("writing the ServiceL2Status of %s: %w", key, err))
			continue
		}
		cur.status = st
		w.written[key] = cur
	}
	for key, cur := range w.written {
		if _, ok := desired[key]; ok {
			continue
		}
		if err := res.Delete(ctx, cur.name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting the ServiceL2Status of %s: %w", key, err))
			continue
		}
		delete(w.written, key)
	}
	return errors.Join(errs...)
}

// list learns the objects an earlier run of this node's gateway left.
func (w *l2StatusWriter) list(ctx context.Context, res dynamic.ResourceInterface) error {
	l, err := res.List(ctx, metav1.ListOptions{LabelSelector: LabelL2Node + "=" + w.node})
	if err != nil {
		return fmt.Errorf("listing this node's ServiceL2Status objects: %w", err)
	}
	w.written = map[types.NamespacedName]writtenL2Status{}
	for _, u := range l.Items {
		var obj metallbv1beta1.ServiceL2Status
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &obj); err != nil {
			continue
		}
		key := types.NamespacedName{Namespace: obj.Labels[LabelL2ServiceNamespace], Name: obj.Labels[LabelL2ServiceName]}
		if _, dup := w.written[key]; dup || key.Name == "" {
			// A second object for one Service, or one without its labels: the loop below deletes
			// what is not in written, so delete this one now.
			_ = res.Delete(ctx, obj.Name, metav1.DeleteOptions{})
			continue
		}
		w.written[key] = writtenL2Status{name: obj.Name, status: obj.Status}
	}
	w.listed = true
	return nil
}

func (w *l2StatusWriter) create(ctx context.Context, res dynamic.ResourceInterface, key types.NamespacedName) (string, error) {
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": metallbv1beta1.GroupVersion.String(),
		"kind":       "ServiceL2Status",
		"metadata": map[string]any{
			"generateName": "l2-",
			"namespace":    w.namespace,
			"labels": map[string]any{
				LabelL2Node: w.node, LabelL2ServiceName: key.Name, LabelL2ServiceNamespace: key.Namespace,
			},
		},
	}}
	created, err := res.Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("creating the ServiceL2Status of %s: %w", key, err)
	}
	return created.GetName(), nil
}

// deleteStale deletes the objects of key left by gateways that are no longer live (a crashed node
// cannot delete its own); a live one deletes its own when it stops announcing.
func (w *l2StatusWriter) deleteStale(ctx context.Context, res dynamic.ResourceInterface, key types.NamespacedName, live map[string]bool) error {
	l, err := res.List(ctx, metav1.ListOptions{LabelSelector: LabelL2ServiceName + "=" + key.Name + "," + LabelL2ServiceNamespace + "=" + key.Namespace})
	if err != nil {
		return fmt.Errorf("listing the ServiceL2Status objects of %s: %w", key, err)
	}
	var errs []error
	for _, u := range l.Items {
		node := u.GetLabels()[LabelL2Node]
		if node == w.node || live[node] {
			continue
		}
		if err := res.Delete(ctx, u.GetName(), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting %s's stale ServiceL2Status of %s: %w", node, key, err))
		}
	}
	return errors.Join(errs...)
}

// notInstalled turns "the API server does not serve ServiceL2Status" (a List answered 404) into a
// pause: the CRD is optional (MetalLB's chart or ours installs it).
func (w *l2StatusWriter) notInstalled(ctx context.Context, err error) error {
	if apierrors.IsNotFound(err) {
		klog.FromContext(ctx).Info("ServiceL2Status is not served (its CRD is not installed); not publishing it for a while", "retryIn", l2StatusRetry)
		w.skipUntil = time.Now().Add(l2StatusRetry)
		return nil
	}
	return err
}
