package lab

// TEMPORARY until internal/lab/kubelet exports Run/RunBinder: registers the Node only.

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/baregate/baregate/internal/lab/kubelet"
)

func runKubelet(ctx context.Context, cfg kubelet.Config) error {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: cfg.NodeName, Labels: map[string]string{"kubernetes.io/hostname": cfg.NodeName}}}
	for _, ip := range cfg.NodeIPs {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip.String()})
	}
	for _, p := range cfg.PodCIDRs {
		n.Spec.PodCIDRs = append(n.Spec.PodCIDRs, p.String())
	}
	n.Spec.PodCIDR = n.Spec.PodCIDRs[0]
	st := n.Status
	n, err := cfg.Client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	n.Status = st
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now()}}
	if _, err := cfg.Client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

func runBinder(ctx context.Context, cs kubernetes.Interface, nodes []string) error {
	<-ctx.Done()
	return nil
}
