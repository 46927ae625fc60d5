package allocator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/klog/v2"

	"github.com/baregate/baregate/internal/cluster"
)

// FieldManager is the field manager of baregate's allocation writes.
const FieldManager = "baregate-lbip-allocator"

// PoolResource is MetalLB's IPAddressPool resource.
var PoolResource = schema.GroupVersionResource{Group: "metallb.io", Version: "v1beta1", Resource: "ipaddresspools"}

// Allocator writes Allocate's result into the cluster while this gateway is the leader.
type Allocator struct {
	deps    cluster.Deps
	dyn     dynamic.Interface
	runner  *cluster.Runner
	metrics *metrics
	snap    atomic.Pointer[cluster.Snapshot]
	leading atomic.Bool
	last    atomic.Pointer[Result]

	mu sync.Mutex
	// told remembers the last warning emitted per object, so a standing refusal is reported once,
	// not on every sync.
	told map[types.UID]string
}

// New returns an Allocator. dyn writes IPAddressPool status; with nil, pool status is not written.
func New(cfg Config, deps cluster.Deps, dyn dynamic.Interface) (*Allocator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Client == nil || deps.Recorder == nil {
		return nil, errors.New("lbip allocator needs a client and an event recorder")
	}
	m, err := newMetrics(deps.Metrics)
	if err != nil {
		return nil, err
	}
	a := &Allocator{deps: deps, dyn: dyn, metrics: m, told: map[types.UID]string{}}
	a.runner = cluster.NewRunner("lbip-allocator", cfg.MinSyncPeriod, 500*time.Millisecond, 30*time.Second, a.sync)
	return a, nil
}

// Name implements cluster.Component's naming.
func (a *Allocator) Name() string { return "lbip-allocator" }

// Update hands over a newer snapshot; it never blocks.
func (a *Allocator) Update(s *cluster.Snapshot) {
	a.snap.Store(s)
	a.runner.Trigger()
}

// RunLeader writes allocations until ctx ends (the gateway cancels it on losing the leader Lease).
func (a *Allocator) RunLeader(ctx context.Context) error {
	a.leading.Store(true)
	defer a.leading.Store(false)
	a.runner.Run(ctx)
	return nil
}

// Ready is always nil: only the leader allocates, and a follower must not look unready for that.
func (a *Allocator) Ready() error { return nil }

// Healthy reports an allocation the leader has not managed to write for a minute.
func (a *Allocator) Healthy() error {
	st := a.runner.Status()
	if a.leading.Load() && !st.Healthy(time.Now(), time.Minute) {
		return fmt.Errorf("allocations pending since %v: %v", st.PendingSince, st.LastError)
	}
	return nil
}

// Status is the writer's sync state, for the dashboard.
func (a *Allocator) Status() cluster.RunnerStatus { return a.runner.Status() }

// Last is the allocation last written, or nil.
func (a *Allocator) Last() *Result { return a.last.Load() }

func (a *Allocator) sync(ctx context.Context) error {
	snap := a.snap.Load()
	if snap == nil {
		return nil
	}
	logger := klog.FromContext(ctx).WithValues("generation", snap.Generation)
	res := Allocate(snap)
	a.metrics.setPools(res.Pools)
	a.tellPools(res.Pools)

	var errs []error
	// Releases go first, so an address handed from one Service to another is never in two
	// statuses at once; an address whose release failed is not handed out in this sync.
	unreleased := map[netip.Addr]bool{}
	for _, key := range res.Clear {
		if svc := snap.Service(key); svc != nil {
			written, err := a.writeStatus(ctx, svc.Service, nil)
			if err != nil {
				errs = append(errs, err)
				ips, _ := statusIPs(svc.Service)
				for _, ip := range ips {
					unreleased[ip] = true
				}
				continue
			}
			if !written {
				continue
			}
			logger.Info("Released load-balancer IPs of a Service that is no longer a LoadBalancer", "service", key)
			a.metrics.allocations.WithLabelValues("released", "").Inc()
		}
	}
	var later []Assignment
	for _, asg := range res.Services {
		svc := snap.Service(asg.Service).Service
		cur, _ := statusIPs(svc)
		if !asg.Changed {
			a.tellRefusal(svc, asg.Refusal, false)
			continue
		}
		if !containsAll(asg.IPs, cur) {
			if err := a.apply(ctx, svc, asg); err != nil {
				errs = append(errs, err)
				for _, ip := range cur {
					unreleased[ip] = true
				}
			}
			continue
		}
		later = append(later, asg)
	}
	for _, asg := range later {
		svc := snap.Service(asg.Service).Service
		if slices.ContainsFunc(asg.IPs, func(ip netip.Addr) bool { return unreleased[ip] }) {
			errs = append(errs, fmt.Errorf("not allocating to %s: an address it would get is still held elsewhere", asg.Service))
			continue
		}
		if err := a.apply(ctx, svc, asg); err != nil {
			errs = append(errs, err)
		}
	}
	if err := a.writePools(ctx, res.Pools); err != nil {
		errs = append(errs, err)
	}
	a.forgetGone(snap)
	a.last.Store(&res)
	return errors.Join(errs...)
}

// forgetGone drops what was told about objects that no longer exist.
func (a *Allocator) forgetGone(snap *cluster.Snapshot) {
	live := make(map[types.UID]bool, len(snap.Services)+len(snap.Pools))
	for _, s := range snap.Services {
		live[s.UID] = true
	}
	for _, p := range snap.Pools {
		live[p.UID] = true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for uid := range a.told {
		if !live[uid] {
			delete(a.told, uid)
		}
	}
}

func containsAll(have, want []netip.Addr) bool {
	for _, ip := range want {
		if !slices.Contains(have, ip) {
			return false
		}
	}
	return true
}

// apply writes one Service's changed assignment and tells its owner.
func (a *Allocator) apply(ctx context.Context, svc *corev1.Service, asg Assignment) error {
	written, err := a.writeStatus(ctx, svc, asg.IPs)
	if err != nil || !written {
		return err
	}
	logger := klog.FromContext(ctx)
	key := asg.Service
	if len(asg.IPs) > 0 {
		pools := slices.Compact(slices.Clone(asg.Pools))
		a.deps.Recorder.Eventf(svc, corev1.EventTypeNormal, "IPAllocated", "Assigned IP %s from pool %s", addrList(asg.IPs), strings.Join(pools, ", "))
		logger.Info("Assigned load-balancer IPs", "service", key, "ips", asg.IPs, "pools", pools)
		a.metrics.allocations.WithLabelValues("allocated", "").Inc()
	} else {
		logger.Info("Cleared load-balancer IPs", "service", key)
		a.metrics.allocations.WithLabelValues("released", "").Inc()
	}
	a.tellRefusal(svc, asg.Refusal, true)
	return nil
}

// tellRefusal emits AllocationFailed when a Service's refusal is new or its status just changed.
func (a *Allocator) tellRefusal(svc *corev1.Service, r *Refusal, changed bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if r == nil {
		delete(a.told, svc.UID)
		return
	}
	if !changed && a.told[svc.UID] == r.Error() {
		return
	}
	a.told[svc.UID] = r.Error()
	a.deps.Recorder.Eventf(svc, corev1.EventTypeWarning, "AllocationFailed", "%s: %s", r.Reason, r.Message)
	klog.Background().Info("Refused a LoadBalancer IP allocation", "service", klog.KObj(svc), "reason", r.Reason, "message", r.Message)
	a.metrics.allocations.WithLabelValues("refused", r.Reason).Inc()
}

func (a *Allocator) tellPools(pools []PoolStatus) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range pools {
		uid := p.Object.UID
		if p.Err == nil {
			delete(a.told, uid)
			continue
		}
		if a.told[uid] == p.Err.Error() {
			continue
		}
		a.told[uid] = p.Err.Error()
		ref := &corev1.ObjectReference{APIVersion: "metallb.io/v1beta1", Kind: "IPAddressPool", Namespace: p.Object.Namespace, Name: p.Name, UID: uid}
		a.deps.Recorder.Eventf(ref, corev1.EventTypeWarning, "InvalidPool", "Pool refused, no addresses are handed out from it: %v", p.Err)
		klog.Background().Info("Refused an IPAddressPool", "pool", p.Name, "err", p.Err)
	}
}

func addrList(ips []netip.Addr) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, ", ")
}

// writeStatus sets svc's load-balancer ingress to ips and reports whether it did. On a conflict it
// retries on the newest version only if nothing allocation depends on changed; otherwise the newer
// version is already on its way through the informer and the next sync decides afresh.
func (a *Allocator) writeStatus(ctx context.Context, svc *corev1.Service, ips []netip.Addr) (bool, error) {
	client := a.deps.Client.CoreV1().Services(svc.Namespace)
	want := svc.DeepCopy()
	for range 5 {
		want.Status.LoadBalancer = corev1.LoadBalancerStatus{}
		for _, ip := range ips {
			want.Status.LoadBalancer.Ingress = append(want.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip.String(), IPMode: ptrTo(corev1.LoadBalancerIPModeVIP)})
		}
		_, err := client.UpdateStatus(ctx, want, metav1.UpdateOptions{FieldManager: FieldManager})
		switch {
		case err == nil:
			return true, nil
		case apierrors.IsNotFound(err):
			return false, nil
		case !apierrors.IsConflict(err):
			return false, fmt.Errorf("writing status of Service %s/%s: %w", svc.Namespace, svc.Name, err)
		}
		fresh, err := client.Get(ctx, svc.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("reading Service %s/%s after a conflict: %w", svc.Namespace, svc.Name, err)
		}
		if fresh.UID != svc.UID || !sameInputs(svc, fresh) {
			return false, nil
		}
		want = fresh.DeepCopy()
	}
	return false, fmt.Errorf("writing status of Service %s/%s: still conflicting", svc.Namespace, svc.Name)
}

func ptrTo[T any](v T) *T { return &v }

// sameInputs reports whether nothing Allocate reads of a Service differs between a and b.
func sameInputs(a, b *corev1.Service) bool {
	return equality.Semantic.DeepEqual(a.Spec, b.Spec) && equality.Semantic.DeepEqual(a.Labels, b.Labels) &&
		equality.Semantic.DeepEqual(a.Annotations, b.Annotations) && equality.Semantic.DeepEqual(a.Status.LoadBalancer, b.Status.LoadBalancer)
}

// writePools writes pool usage into the IPAddressPools' status subresource, tolerating a cluster
// without MetalLB's CRDs.
func (a *Allocator) writePools(ctx context.Context, pools []PoolStatus) error {
	if a.dyn == nil {
		return nil
	}
	var errs []error
	for _, p := range pools {
		if p.Err != nil || p.Object.Status == p.Status {
			continue
		}
		body, err := json.Marshal(map[string]any{"status": p.Status})
		if err != nil {
			return fmt.Errorf("encoding status of pool %s: %w", p.Name, err)
		}
		_, err = a.dyn.Resource(PoolResource).Namespace(p.Object.Namespace).Patch(ctx, p.Name, types.MergePatchType, body,
			metav1.PatchOptions{FieldManager: FieldManager}, "status")
		switch {
		case err == nil, apierrors.IsNotFound(err), meta.IsNoMatchError(err):
		case apierrors.IsForbidden(err):
			// Pool status is informative only: a chart without that permission must not make the
			// allocator look stuck (and fail /healthz) while Services get their addresses.
			klog.FromContext(ctx).Error(err, "Not allowed to write IPAddressPool status", "pool", p.Name)
		default:
			errs = append(errs, fmt.Errorf("writing status of pool %s: %w", p.Name, err))
		}
	}
	return errors.Join(errs...)
}
