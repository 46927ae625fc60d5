package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
)

// The Pods that run baregate on the lab's nodes, as the chart's DaemonSet's would.
const (
	GatewayAppLabel = "app.kubernetes.io/name"
	GatewayApp      = "baregate"
	// GatewayImage is the image name the lab kubelet runs as `baregate-lab pod-run gateway <command>`.
	GatewayImage = "baregate.io/lab-gateway"
	// GatewayProgram is the pod-run program that execs a gateway container's command.
	GatewayProgram = "gateway"
	// gatewayAdminPort is baregate's default --admin-address port, probed for readiness.
	gatewayAdminPort = 9710
)

// GatewayPodName is the name of the Pod that runs node i's gateway.
func GatewayPodName(i int) string { return "baregate-" + NodeName(i) }

// programFor maps the gateway image to the gateway program and everything else to the echo images.
func programFor(echoFor func(string, []string) (string, []string, bool)) func(string, []string) (string, []string, bool) {
	return func(image string, args []string) (string, []string, bool) {
		if image == GatewayImage {
			return GatewayProgram, args, len(args) > 0
		}
		return echoFor(image, args)
	}
}

// StartGateway creates node i's gateway Pod: a hostNetwork Pod the lab kubelet runs in the node's
// namespace with the node's name and the lab's kubeconfig, exactly as the DaemonSet would. It returns
// once the Pod is Ready (baregate's /readyz answers).
func (l *Lab) StartGateway(ctx context.Context, i int) error {
	if i < 1 || i > l.o.Nodes {
		return fmt.Errorf("no node %d in a lab of %d", i, l.o.Nodes)
	}
	if l.o.GatewayBinary == "" {
		// A lab started without gateways builds the binary when the first one starts.
		p, err := BuildBinary(ctx, "./cmd/baregate", filepath.Join(l.o.Dir, "bin"))
		if err != nil {
			return err
		}
		l.o.GatewayBinary = p
	}
	if err := l.ensureNamespace(ctx, GatewayNamespace); err != nil {
		return err
	}
	pods := l.client.CoreV1().Pods(GatewayNamespace)
	if _, err := pods.Create(ctx, l.gatewayPod(i), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating the gateway Pod of %s: %w", NodeName(i), err)
	}
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		p, err := pods.Get(ctx, GatewayPodName(i), metav1.GetOptions{})
		return err == nil && PodReady(p), nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the gateway of %s to be Ready (logs under %s): %w", NodeName(i), filepath.Join(l.o.Dir, "kubelet"), err)
	}
	return nil
}

// KillGateway deletes node i's gateway Pod at once (grace period 0), as a node losing its gateway would,
// and returns when the process is gone. StartGateway brings it back.
func (l *Lab) KillGateway(ctx context.Context, i int) error {
	zero := int64(0)
	err := l.client.CoreV1().Pods(GatewayNamespace).Delete(ctx, GatewayPodName(i), metav1.DeleteOptions{GracePeriodSeconds: &zero})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting the gateway Pod of %s: %w", NodeName(i), err)
	}
	return wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		return len(l.gatewayPIDs(i)) == 0, nil
	})
}

// CrashGateway SIGKILLs node i's gateway process; the kubelet restarts it, as after a crash.
func (l *Lab) CrashGateway(i int) error {
	pids := l.gatewayPIDs(i)
	if len(pids) == 0 {
		return fmt.Errorf("no gateway process runs on %s", NodeName(i))
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			return fmt.Errorf("killing the gateway of %s: %w", NodeName(i), err)
		}
	}
	return nil
}

// SetGatewayAccess makes the next StartGateway calls run baregate with kubeconfig instead of the admin
// one ("" = admin again) and with args instead of Options.GatewayArgs, as a test of the chart's RBAC
// does with its ServiceAccount's token and its DaemonSet's arguments. Running gateways keep theirs.
func (l *Lab) SetGatewayAccess(kubeconfig string, args []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.gatewayKubeconfig = kubeconfig
	l.o.GatewayArgs = slices.Clone(args)
}

// gatewayAccess is the kubeconfig and extra arguments gateways start with.
func (l *Lab) gatewayAccess() (kubeconfig string, args []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.gatewayKubeconfig != "" {
		return l.gatewayKubeconfig, l.o.GatewayArgs
	}
	return l.KubeconfigPath(), l.o.GatewayArgs
}

// GatewayLog is the file node i's gateway logs to.
func (l *Lab) GatewayLog(i int) string {
	return filepath.Join(l.o.Dir, "kubelet", NodeName(i), "logs", GatewayNamespace+"_"+GatewayPodName(i)+"_baregate.log")
}

// GatewayRunning reports whether a gateway process runs on node i.
func (l *Lab) GatewayRunning(i int) bool { return len(l.gatewayPIDs(i)) > 0 }

// gatewayPIDs finds node i's gateway processes by their command line.
func (l *Lab) gatewayPIDs(i int) []int {
	kubeconfig, _ := l.gatewayAccess()
	want := []string{l.o.GatewayBinary, "--node-name=" + NodeName(i), "--kubeconfig=" + kubeconfig}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) < 3 || args[0] != want[0] {
			continue
		}
		n := 0
		for _, a := range args {
			if a == want[1] || a == want[2] {
				n++
			}
		}
		if n == 2 {
			pids = append(pids, pid)
		}
	}
	return pids
}

func (l *Lab) gatewayPod(i int) *corev1.Pod {
	fieldEnv := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	kubeconfig, extra := l.gatewayAccess()
	args := append([]string{
		"--node-name=" + NodeName(i),
		"--kubeconfig=" + kubeconfig,
		"--namespace=" + GatewayNamespace,
	}, extra...)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:      GatewayPodName(i),
			Namespace: GatewayNamespace,
			Labels:    map[string]string{GatewayAppLabel: GatewayApp, "app.kubernetes.io/instance": GatewayApp},
		},
		Spec: corev1.PodSpec{
			NodeName:      NodeName(i),
			HostNetwork:   true,
			RestartPolicy: corev1.RestartPolicyAlways,
			Containers: []corev1.Container{{
				Name:    "baregate",
				Image:   GatewayImage,
				Command: []string{l.o.GatewayBinary},
				Args:    args,
				Env: []corev1.EnvVar{
					fieldEnv("NODE_NAME", "spec.nodeName"),
					fieldEnv("POD_NAME", "metadata.name"),
					fieldEnv("POD_NAMESPACE", "metadata.namespace"),
				},
				Ports: []corev1.ContainerPort{
					{Name: "http", ContainerPort: 80, Protocol: corev1.ProtocolTCP},
					{Name: "https", ContainerPort: 443, Protocol: corev1.ProtocolTCP},
					{Name: "admin", ContainerPort: gatewayAdminPort, Protocol: corev1.ProtocolTCP},
				},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("admin")}},
					PeriodSeconds: 1,
				},
			}},
			Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
		},
	}
}

// ensureNamespace creates ns and waits for its default ServiceAccount, without which Pods are refused.
func (l *Lab) ensureNamespace(ctx context.Context, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := l.client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", name, err)
	}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := l.client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the default ServiceAccount of %s: %w", name, err)
	}
	return nil
}

// PodReady reports whether the Pod's Ready condition is True.
func PodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
