package lab

import (
	"context"
	"fmt"
	"os/exec"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// PodNetns finds the network namespace the lab kubelet made for a running Pod (its node's for
// hostNetwork Pods), by the Pod's IP among the namespaces of the Pod's node.
func (l *Lab) PodNetns(ctx context.Context, pod *corev1.Pod) (string, error) {
	node := -1
	for i := 1; i <= l.o.Nodes; i++ {
		if NodeName(i) == pod.Spec.NodeName {
			node = i
		}
	}
	if node < 0 {
		return "", fmt.Errorf("pod %s/%s is not on a lab node (node %q)", pod.Namespace, pod.Name, pod.Spec.NodeName)
	}
	if pod.Spec.HostNetwork {
		return l.NodeNetns(node), nil
	}
	if pod.Status.PodIP == "" {
		return "", fmt.Errorf("pod %s/%s has no IP yet", pod.Namespace, pod.Name)
	}
	names, err := LabNetns(ctx, l.o.ID)
	if err != nil {
		return "", err
	}
	prefix := PodNetnsPrefix(l.o.ID) + pod.Spec.NodeName + "-"
	for _, ns := range names {
		if !strings.HasPrefix(ns, prefix) {
			continue
		}
		out, err := exec.CommandContext(ctx, "ip", "-n", ns, "-br", "addr", "show", "dev", "eth0").Output()
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(out)) {
			if ip, _, _ := strings.Cut(f, "/"); ip == pod.Status.PodIP {
				return ns, nil
			}
		}
	}
	return "", fmt.Errorf("no namespace of %s holds the IP %s of pod %s/%s", pod.Spec.NodeName, pod.Status.PodIP, pod.Namespace, pod.Name)
}

// NetnsPIDs lists the processes running in a network namespace.
func NetnsPIDs(ctx context.Context, ns string) ([]string, error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "pids", ns).Output()
	if err != nil {
		return nil, fmt.Errorf("listing processes of %s: %w", ns, err)
	}
	return strings.Fields(string(out)), nil
}
