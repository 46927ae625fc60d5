package kubelet

import (
	"context"
	"fmt"
	"maps"
	"runtime"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
)

// heartbeat is how often the node's Ready condition and Lease are renewed (a kubelet's default).
const heartbeat = 10 * time.Second

// nodeObject is the Node this kubelet registers: labels, pod CIDRs, addresses, capacity and a
// Ready condition stamped now.
func nodeObject(cfg *Config, now time.Time) *corev1.Node {
	labels := map[string]string{
		"kubernetes.io/hostname":      cfg.NodeName,
		"kubernetes.io/os":            "linux",
		"kubernetes.io/arch":          runtime.GOARCH,
		"topology.kubernetes.io/zone": cfg.Zone,
	}
	if cfg.Zone == "" {
		delete(labels, "topology.kubernetes.io/zone")
	}
	maps.Copy(labels, cfg.Labels)
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: cfg.NodeName, Labels: labels}}
	for _, p := range cfg.PodCIDRs {
		n.Spec.PodCIDRs = append(n.Spec.PodCIDRs, p.String())
	}
	n.Spec.PodCIDR = n.Spec.PodCIDRs[0]
	for _, ip := range cfg.NodeIPs {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip.String()})
	}
	n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: cfg.NodeName})
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI),
		corev1.ResourceMemory: resource.MustParse("8Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	n.Status.Capacity, n.Status.Allocatable = capacity, capacity.DeepCopy()
	n.Status.NodeInfo = corev1.NodeSystemInfo{OperatingSystem: "linux", Architecture: runtime.GOARCH,
		KubeletVersion: "v1.36.3", ContainerRuntimeVersion: "baregate-lab://1"}
	n.Status.Conditions = []corev1.NodeCondition{readyCondition(now, now)}
	return n
}

func readyCondition(heartbeat, transition time.Time) corev1.NodeCondition {
	return corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
		Message: "lab kubelet is posting ready status", LastHeartbeatTime: metav1.NewTime(heartbeat),
		LastTransitionTime: metav1.NewTime(transition)}
}

// runNode registers the node, then renews its Ready condition and Lease until ctx ends. Errors
// are retried on the next beat.
func (k *kubelet) runNode(ctx context.Context) {
	logger := klog.FromContext(ctx)
	registered := false
	for {
		var err error
		if !registered {
			if err = k.registerNode(ctx); err == nil {
				registered = true
				logger.Info("Registered node")
			}
		} else {
			err = k.beat(ctx)
		}
		if err != nil && ctx.Err() == nil {
			logger.Error(err, "Node heartbeat failed")
		}
		wait := heartbeat
		if !registered {
			wait = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (k *kubelet) registerNode(ctx context.Context) error {
	nodes := k.cfg.Client.CoreV1().Nodes()
	want := nodeObject(&k.cfg, time.Now())
	n, err := nodes.Get(ctx, want.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		n, err = nodes.Create(ctx, want, metav1.CreateOptions{})
	} else if err == nil {
		// A node of an earlier run: take over its labels and CIDRs (the CIDRs cannot change once set).
		n.Labels = want.Labels
		if n.Spec.PodCIDR == "" {
			n.Spec.PodCIDR, n.Spec.PodCIDRs = want.Spec.PodCIDR, want.Spec.PodCIDRs
		}
		n, err = nodes.Update(ctx, n, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("registering node: %w", err)
	}
	n.Status = want.Status
	if _, err := nodes.UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("writing node status: %w", err)
	}
	return k.renewLease(ctx)
}

func (k *kubelet) beat(ctx context.Context) error {
	nodes := k.cfg.Client.CoreV1().Nodes()
	n, err := nodes.Get(ctx, k.cfg.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return k.registerNode(ctx)
	}
	if err != nil {
		return fmt.Errorf("reading node: %w", err)
	}
	now := time.Now()
	cond := readyCondition(now, now)
	found := false
	for i, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			if c.Status == corev1.ConditionTrue {
				cond.LastTransitionTime = c.LastTransitionTime
			}
			n.Status.Conditions[i], found = cond, true
		}
	}
	if !found {
		n.Status.Conditions = append(n.Status.Conditions, cond)
	}
	if _, err := nodes.UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("writing node heartbeat: %w", err)
	}
	return k.renewLease(ctx)
}

// renewLease keeps the node's Lease in kube-node-lease fresh, the heartbeat node-lifecycle reads.
func (k *kubelet) renewLease(ctx context.Context) error {
	leases := k.cfg.Client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	l, err := leases.Get(ctx, k.cfg.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		l = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: k.cfg.NodeName, Namespace: corev1.NamespaceNodeLease},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr(k.cfg.NodeName), LeaseDurationSeconds: ptr(int32(40)), RenewTime: &now}}
		_, err = leases.Create(ctx, l, metav1.CreateOptions{})
	} else if err == nil {
		l.Spec.RenewTime = &now
		_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("renewing node lease: %w", err)
	}
	return nil
}
