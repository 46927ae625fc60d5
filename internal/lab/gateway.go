package lab

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// Labels and annotation of the Pods that stand for the lab's gateway processes.
const (
	GatewayAppLabel = "app.kubernetes.io/name"
	GatewayApp      = "baregate"
	// UnmanagedAnnotation marks Pods whose process the lab runs itself: the lab kubelet leaves them alone.
	UnmanagedAnnotation = "lab.baregate.io/unmanaged"
)

// GatewayPodName is the name of the Pod that represents node i's gateway.
func GatewayPodName(i int) string { return "baregate-" + NodeName(i) }

// StartGateway runs baregate on node i as the DaemonSet would (in the node's namespace, with its node
// name and a kubeconfig) and marks its Pod Ready.
func (l *Lab) StartGateway(ctx context.Context, i int) error {
	if i < 1 || i > l.o.Nodes {
		return fmt.Errorf("no node %d in a lab of %d", i, l.o.Nodes)
	}
	if l.o.GatewayBinary == "" {
		return fmt.Errorf("no gateway binary: set Options.GatewayBinary or StartGateway")
	}
	l.mu.Lock()
	running := l.gateways[i]
	l.mu.Unlock()
	if running != nil && !running.exited() {
		return fmt.Errorf("the gateway of %s already runs", NodeName(i))
	}
	if err := l.ensureGatewayPod(ctx, i); err != nil {
		return err
	}
	args := append([]string{l.o.GatewayBinary,
		"--node-name=" + NodeName(i),
		"--kubeconfig=" + l.KubeconfigPath(),
		"--namespace=" + GatewayNamespace,
	}, l.o.GatewayArgs...)
	name := "baregate-" + NodeName(i)
	p, err := startProcess(l.NodeNetns(i), name, filepath.Join(l.o.Dir, "logs", name+".log"), l.o.Log, args...)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.gateways[i] = p
	l.mu.Unlock()
	return l.setGatewayReady(ctx, i, true)
}

// KillGateway kills node i's gateway at once (SIGKILL, no clean shutdown), as a crash would, and marks
// its Pod not Ready as a kubelet would on the failing probe.
func (l *Lab) KillGateway(ctx context.Context, i int) error {
	l.mu.Lock()
	p := l.gateways[i]
	delete(l.gateways, i)
	l.mu.Unlock()
	if p == nil {
		return fmt.Errorf("no gateway runs on %s", NodeName(i))
	}
	if err := p.stop(0); err != nil {
		return err
	}
	return l.setGatewayReady(ctx, i, false)
}

// GatewayRunning reports whether node i's gateway process is alive.
func (l *Lab) GatewayRunning(i int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.gateways[i]
	return p != nil && !p.exited()
}

func (l *Lab) ensureGatewayPod(ctx context.Context, i int) error {
	cs := l.client
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: GatewayNamespace}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", GatewayNamespace, err)
	}
	// Pods are refused until the namespace's default ServiceAccount exists.
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(GatewayNamespace).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the default ServiceAccount of %s: %w", GatewayNamespace, err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:        GatewayPodName(i),
			Namespace:   GatewayNamespace,
			Labels:      map[string]string{GatewayAppLabel: GatewayApp, "app.kubernetes.io/instance": GatewayApp},
			Annotations: map[string]string{UnmanagedAnnotation: "true"},
		},
		Spec: corev1.PodSpec{
			NodeName:    NodeName(i),
			HostNetwork: true,
			Containers: []corev1.Container{{
				Name:  "baregate",
				Image: "baregate:lab",
				Ports: []corev1.ContainerPort{
					{Name: "http", ContainerPort: 80, Protocol: corev1.ProtocolTCP},
					{Name: "https", ContainerPort: 443, Protocol: corev1.ProtocolTCP},
				},
			}},
			Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
		},
	}
	if _, err := cs.CoreV1().Pods(GatewayNamespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating the gateway Pod of %s: %w", NodeName(i), err)
	}
	return nil
}

// setGatewayReady writes the status a kubelet would for a hostNetwork Pod whose container runs (or not).
func (l *Lab) setGatewayReady(ctx context.Context, i int, ready bool) error {
	pods := l.client.CoreV1().Pods(GatewayNamespace)
	v4, v6 := NodeIPs(i)
	cond := corev1.ConditionFalse
	if ready {
		cond = corev1.ConditionTrue
	}
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		pod, err := pods.Get(ctx, GatewayPodName(i), metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		now := metav1.Now()
		pod.Status.Phase = corev1.PodRunning
		pod.Status.HostIP = v4
		pod.Status.HostIPs = []corev1.HostIP{{IP: v4}, {IP: v6}}
		pod.Status.PodIP = v4
		pod.Status.PodIPs = []corev1.PodIP{{IP: v4}, {IP: v6}}
		if pod.Status.StartTime == nil {
			pod.Status.StartTime = &now
		}
		pod.Status.Conditions = []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: cond, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: cond, LastTransitionTime: now},
		}
		state := corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}
		if !ready {
			state = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "Error", FinishedAt: now}}
		}
		pod.Status.ContainerStatuses = []corev1.ContainerStatus{{
			Name: "baregate", Image: "baregate:lab", ImageID: "baregate:lab", Ready: ready, State: state,
			Started: &ready, RestartCount: 0,
		}}
		_, err = pods.UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		if err != nil && !apierrors.IsConflict(err) {
			return false, fmt.Errorf("writing the status of the gateway Pod of %s: %w", NodeName(i), err)
		}
		return err == nil, nil
	})
}
