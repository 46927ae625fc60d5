package ingress

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/baregate/baregate/ingress/route"
	"github.com/baregate/baregate/internal/cluster"
)

// StatusUpdate is one Ingress whose status.loadBalancer must change.
type StatusUpdate struct {
	Ingress *networkingv1.Ingress
	Want    []networkingv1.IngressLoadBalancerIngress
}

// DesiredStatus lists the served Ingresses whose status.loadBalancer differs from the address of
// the ingress Service svc. Nothing is listed while svc is missing from the snapshot: a Service
// briefly absent from a cache must not wipe every Ingress's address. Ingresses baregate does not
// serve are not in the snapshot, so they are never touched.
func DesiredStatus(snap *cluster.Snapshot, svc types.NamespacedName) []StatusUpdate {
	s := snap.Service(svc)
	if s == nil {
		return nil
	}
	var want []networkingv1.IngressLoadBalancerIngress
	for _, lb := range s.Status.LoadBalancer.Ingress {
		want = append(want, networkingv1.IngressLoadBalancerIngress{IP: lb.IP, Hostname: lb.Hostname})
	}
	var out []StatusUpdate
	for _, ing := range snap.Ingresses {
		if !slices.EqualFunc(ing.Status.LoadBalancer.Ingress, want, func(a, b networkingv1.IngressLoadBalancerIngress) bool {
			return a.IP == b.IP && a.Hostname == b.Hostname && len(a.Ports) == 0
		}) {
			out = append(out, StatusUpdate{Ingress: ing, Want: want})
		}
	}
	return out
}

// RunLeader implements cluster.Leader: while this gateway leads, it keeps the status of served
// Ingresses in step with the ingress Service's address and reports route problems as Events (once
// per cluster, not once per node).
func (i *Ingress) RunLeader(ctx context.Context) error {
	ctx = klog.NewContext(ctx, klog.FromContext(ctx).WithName("ingress-status"))
	reported := map[problemKey]bool{}
	r := cluster.NewRunner("ingress-status", 100*time.Millisecond, 500*time.Millisecond, 30*time.Second, func(ctx context.Context) error {
		i.reportProblems(reported)
		return i.writeStatus(ctx)
	})
	i.mu.Lock()
	i.leader = r
	i.mu.Unlock()
	defer func() {
		i.mu.Lock()
		i.leader = nil
		i.mu.Unlock()
	}()
	r.Run(ctx)
	return nil
}

func (i *Ingress) writeStatus(ctx context.Context) error {
	snap := i.snap.Load()
	if snap == nil || i.deps.Client == nil {
		return nil
	}
	var errs []error
	for _, u := range DesiredStatus(snap, i.svcKey) {
		ing := u.Ingress.DeepCopy()
		ing.Status.LoadBalancer.Ingress = u.Want
		_, err := i.deps.Client.NetworkingV1().Ingresses(ing.Namespace).UpdateStatus(ctx, ing, metav1.UpdateOptions{})
		if err != nil {
			errs = append(errs, fmt.Errorf("updating the status of Ingress %s/%s: %w", ing.Namespace, ing.Name, err))
			continue
		}
		klog.FromContext(ctx).V(2).Info("Ingress status updated", "ingress", klog.KObj(ing), "loadBalancer", u.Want)
	}
	return errors.Join(errs...)
}

type problemKey struct {
	uid             types.UID
	reason, message string
}

// reportProblems emits an Event for each Problem not reported before; a Problem that goes away and
// comes back is reported again.
func (i *Ingress) reportProblems(reported map[problemKey]bool) {
	pp := i.problems.Load()
	if pp == nil || i.deps.Recorder == nil {
		return
	}
	now := map[problemKey]bool{}
	for _, p := range *pp {
		k := problemKey{p.Ingress.UID, p.Reason, p.Message}
		now[k] = true
		if !reported[k] {
			i.deps.Recorder.Eventf(p.Ingress, corev1.EventTypeWarning, p.Reason, "%s", p.Message)
			klog.Background().WithName("ingress").Info("Ingress rule not served as written", "ingress", klog.KObj(p.Ingress), "reason", p.Reason, "message", p.Message)
		}
	}
	clear(reported)
	for k := range now {
		reported[k] = true
	}
}

// Problems returns the problems of the route table in force.
func (i *Ingress) Problems() []route.Problem {
	if pp := i.problems.Load(); pp != nil {
		return *pp
	}
	return nil
}
