package kubelet_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/baregate/baregate/internal/lab"
	"github.com/baregate/baregate/internal/lab/echo"
	"github.com/baregate/baregate/internal/lab/kubelet"
	"github.com/baregate/baregate/internal/testutil"
)

// TestMain lets the test binary be the lab binary its pods run: `<test> pod-run echo args...`.
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "pod-run" && os.Args[2] == echo.Program {
		if err := echo.Main(os.Args[3:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	code := m.Run()
	stopControlPlane()
	os.Exit(code)
}

// node is a lab node made by the test: a netns with a pod bridge.
type node struct {
	name, netns string
	cfg         kubelet.Config
}

// uniq names things of one test run so parallel packages and leftovers of earlier runs never clash.
func uniq(t *testing.T) string {
	h := sha256.Sum256([]byte(t.Name() + strconv.Itoa(os.Getpid())))
	return hex.EncodeToString(h[:3])
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// newNode creates a node namespace with bridge cbr0 holding the gateway addresses of 198.18.<n>.0/24
// and 2001:db8:1:<n>::/64.
func newNode(t *testing.T, client kubernetes.Interface, n int) *node {
	t.Helper()
	id := uniq(t)
	nd := &node{name: fmt.Sprintf("node%d-%s", n, id), netns: fmt.Sprintf("bgkt-%s-n%d", id, n)}
	run(t, "ip", "netns", "add", nd.netns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", nd.netns).Run() })
	v4 := netip.MustParsePrefix(fmt.Sprintf("198.18.%d.0/24", n))
	v6 := netip.MustParsePrefix(fmt.Sprintf("2001:db8:1:%d::/64", n))
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "cbr0", "type", "bridge"},
		{"addr", "add", fmt.Sprintf("198.18.%d.1/24", n), "dev", "cbr0"},
		{"addr", "add", fmt.Sprintf("2001:db8:1:%d::1/64", n), "dev", "cbr0", "nodad"},
		{"link", "set", "cbr0", "up"},
	} {
		run(t, append([]string{"ip", "-n", nd.netns}, args...)...)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	nd.cfg = kubelet.Config{
		NodeName: nd.name, Netns: nd.netns, PodBridge: "cbr0",
		PodCIDRs: []netip.Prefix{v4, v6}, NodeIPs: []netip.Addr{netip.MustParseAddr(fmt.Sprintf("192.0.2.%d", 10+n))},
		Zone: "zone-a", Labels: map[string]string{"lab": "yes"}, Client: client, Self: self,
		StateDir: t.TempDir(), NetnsPrefix: "bgkt-" + id + "-pod-",
	}
	return nd
}

// startKubelet runs the node's kubelet until the returned stop is called (or the test ends).
func startKubelet(t *testing.T, nd *node) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- kubelet.Run(ctx, nd.cfg) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("kubelet.Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func startControlPlane(t *testing.T) kubernetes.Interface {
	t.Helper()
	cs, _ := startControlPlaneOf(t)
	return cs
}

// shared is the control plane every test of the package uses: starting one takes longer than most
// tests here, and each test names its nodes and pods apart.
var shared struct {
	once sync.Once
	dir  string
	cp   *lab.ControlPlane
	cs   kubernetes.Interface
	err  error
}

func startControlPlaneOf(t *testing.T) (kubernetes.Interface, *lab.ControlPlane) {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "ip", "etcd")
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		if shared.dir, shared.err = os.MkdirTemp("", "kubelet-test-"); shared.err != nil {
			return
		}
		shared.cp, shared.err = lab.StartControlPlane(ctx, lab.ControlPlaneOptions{Dir: shared.dir, Controllers: true})
		if shared.err == nil {
			shared.cs, shared.err = shared.cp.Client()
		}
	})
	if shared.err != nil {
		t.Fatalf("starting the control plane: %v", shared.err)
	}
	return shared.cs, shared.cp
}

func stopControlPlane() {
	if shared.cp != nil {
		if err := shared.cp.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the control plane:", err)
		}
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func echoPod(name, nodeName string, args ...string) *corev1.Pod {
	field := func(p string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: p}}
	}
	image := "echo"
	if len(args) > 0 {
		image = "registry.k8s.io/e2e-test-images/agnhost:2.53"
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{"app": "echo"}},
		Spec: corev1.PodSpec{
			NodeName: nodeName,
			Containers: []corev1.Container{{
				Name: "echo", Image: image, Args: args,
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				Env: []corev1.EnvVar{
					{Name: "POD_NAME", ValueFrom: field("metadata.name")},
					{Name: "NAMESPACE", ValueFrom: field("metadata.namespace")},
					{Name: "SERVICE_NAME", Value: "echo-of-$(POD_NAME)"},
				},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/health", Port: intstr.FromString("http")}},
					PeriodSeconds: 1,
				},
			}},
		},
	}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitReady waits until the pod is Running and Ready with both IPs and returns it.
func waitReady(t *testing.T, cs kubernetes.Interface, name string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	waitFor(t, "pod "+name+" Ready", time.Minute, func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		pod = p
		return p.Status.Phase == corev1.PodRunning && podReady(p) && len(p.Status.PodIPs) == 2, nil
	})
	return pod
}

// getFrom sends an HTTP GET from inside a network namespace.
func getFrom(netns, url string) (string, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: lab.DialContextIn(netns), DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("status %d", resp.StatusCode)
	}
	return string(b), err
}

func containerPid(t *testing.T, p *corev1.Pod) int {
	t.Helper()
	id := p.Status.ContainerStatuses[0].ContainerID
	pid, err := strconv.Atoi(strings.TrimPrefix(id, "lab://"))
	if err != nil {
		t.Fatalf("container ID %q", id)
	}
	return pid
}

func processGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err != nil || !strings.Contains(string(b), "pod-run")
}

func podNetnsNames(t *testing.T, prefix string) []string {
	t.Helper()
	entries, _ := os.ReadDir("/run/netns")
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestPodLifecycle runs a pod on a real node namespace against a real API server: Node registered,
// pod Running and Ready with both IPs, reachable from the node, in the real EndpointSlice, shown
// terminating while it drains, and gone with its namespace and process after deletion.
func TestPodLifecycle(t *testing.T) {
	cs := startControlPlane(t)
	nd := newNode(t, cs, 7)
	startKubelet(t, nd)
	ctx := context.Background()

	waitFor(t, "node registered and Ready", 30*time.Second, func(ctx context.Context) (bool, error) {
		n, err := cs.CoreV1().Nodes().Get(ctx, nd.name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		ready := false
		for _, c := range n.Status.Conditions {
			ready = ready || (c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue)
		}
		return ready, nil
	})
	n, _ := cs.CoreV1().Nodes().Get(ctx, nd.name, metav1.GetOptions{})
	if n.Labels["kubernetes.io/hostname"] != nd.name || n.Labels["topology.kubernetes.io/zone"] != "zone-a" || n.Labels["lab"] != "yes" {
		t.Errorf("node labels %v", n.Labels)
	}
	if strings.Join(n.Spec.PodCIDRs, ",") != "198.18.7.0/24,2001:db8:1:7::/64" || len(n.Status.Addresses) == 0 || n.Status.Addresses[0].Address != "192.0.2.17" {
		t.Errorf("node spec %+v addresses %+v", n.Spec, n.Status.Addresses)
	}

	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: "default"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "echo"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	if _, err := cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// agnhost netexec with --delay-shutdown keeps serving after SIGTERM, so the terminating
	// endpoint is visible while it still serves.
	if _, err := cs.CoreV1().Pods("default").Create(ctx, echoPod("web", nd.name, "netexec", "--http-port=8080", "--delay-shutdown=3"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := waitReady(t, cs, "web")
	if !strings.HasPrefix(pod.Status.PodIP, "198.18.7.") || !strings.HasPrefix(pod.Status.PodIPs[1].IP, "2001:db8:1:7::") || pod.Status.HostIP != "192.0.2.17" {
		t.Errorf("pod IPs %v host IP %s", pod.Status.PodIPs, pod.Status.HostIP)
	}
	for _, ip := range pod.Status.PodIPs {
		url := "http://" + net.JoinHostPort(ip.IP, "8080")
		if got, err := getFrom(nd.netns, url+"/hostname"); err != nil || got != "web" {
			t.Errorf("GET %s/hostname from the node: %q %v", url, got, err)
		}
	}
	body, err := getFrom(nd.netns, "http://"+pod.Status.PodIP+":8080/x")
	if err != nil || !strings.Contains(body, `"service": "echo-of-web"`) || !strings.Contains(body, `"namespace": "default"`) {
		t.Errorf("echo answer: %v %s", err, body)
	}

	sliceEndpoint := func(ctx context.Context) (*discoveryv1.Endpoint, error) {
		slices, err := cs.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=echo"})
		if err != nil {
			return nil, err
		}
		for _, s := range slices.Items {
			for i, e := range s.Endpoints {
				if e.TargetRef != nil && e.TargetRef.Name == "web" && s.AddressType == discoveryv1.AddressTypeIPv4 {
					return &s.Endpoints[i], nil
				}
			}
		}
		return nil, nil
	}
	waitFor(t, "a ready endpoint in the EndpointSlice", 30*time.Second, func(ctx context.Context) (bool, error) {
		e, err := sliceEndpoint(ctx)
		return e != nil && e.Addresses[0] == pod.Status.PodIP && e.Conditions.Ready != nil && *e.Conditions.Ready &&
			e.NodeName != nil && *e.NodeName == nd.name, err
	})

	pid := containerPid(t, pod)
	nsNames := podNetnsNames(t, nd.cfg.NetnsPrefix)
	if len(nsNames) != 1 {
		t.Fatalf("pod namespaces %v, want one", nsNames)
	}
	if err := cs.CoreV1().Pods("default").Delete(ctx, "web", metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(20))}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a terminating, still serving endpoint", 30*time.Second, func(ctx context.Context) (bool, error) {
		e, err := sliceEndpoint(ctx)
		return e != nil && e.Conditions.Terminating != nil && *e.Conditions.Terminating &&
			e.Conditions.Serving != nil && *e.Conditions.Serving, err
	})
	waitFor(t, "the pod object deleted", 30*time.Second, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().Pods("default").Get(ctx, "web", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if !processGone(pid) {
		t.Errorf("container process %d still runs", pid)
	}
	if left := podNetnsNames(t, nd.cfg.NetnsPrefix); len(left) != 0 {
		t.Errorf("pod namespaces left: %v", left)
	}
}

func ptr[T any](v T) *T { return &v }

// TestRestartCleansUp stops a kubelet and starts another for the same node: the second removes a
// leftover namespace with a process in it and runs the pod again with the same IP.
func TestRestartCleansUp(t *testing.T) {
	cs := startControlPlane(t)
	nd := newNode(t, cs, 8)
	ctx := context.Background()

	// What a crashed run leaves: a pod namespace with a container process in it.
	stray := nd.cfg.NetnsPrefix + nd.name + "-stray"
	run(t, "ip", "netns", "add", stray)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", stray).Run() })
	sleeper := exec.Command("ip", "netns", "exec", stray, nd.cfg.Self, "pod-run", "echo", "--port=0")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	go sleeper.Wait()
	waitFor(t, "the leftover process inside its namespace", 10*time.Second, func(context.Context) (bool, error) {
		out, err := exec.Command("ip", "netns", "pids", stray).Output()
		return len(out) > 0, err
	})

	stop := startKubelet(t, nd)
	if _, err := cs.CoreV1().Pods("default").Create(ctx, echoPod("again", nd.name), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	first := waitReady(t, cs, "again")
	if _, err := os.Stat(filepath.Join("/run/netns", stray)); err == nil {
		t.Error("the leftover namespace survived the kubelet's start")
	}
	if err := sleeper.Process.Signal(syscall.Signal(0)); err == nil && !processGone(sleeper.Process.Pid) {
		t.Error("the leftover process survived the kubelet's start")
	}
	pid := containerPid(t, first)
	stop()
	if !processGone(pid) {
		t.Errorf("container %d survives its kubelet", pid)
	}
	if left := podNetnsNames(t, nd.cfg.NetnsPrefix); len(left) != 0 {
		t.Errorf("namespaces left after the kubelet stopped: %v", left)
	}

	startKubelet(t, nd)
	waitFor(t, "the pod restarted by the new kubelet", time.Minute, func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods("default").Get(ctx, "again", metav1.GetOptions{})
		return err == nil && podReady(p) && len(p.Status.ContainerStatuses) == 1 &&
			p.Status.ContainerStatuses[0].ContainerID != first.Status.ContainerStatuses[0].ContainerID, nil
	})
	second := waitReady(t, cs, "again")
	if second.Status.PodIP != first.Status.PodIP {
		t.Errorf("pod IP changed across the restart: %s -> %s", first.Status.PodIP, second.Status.PodIP)
	}
	if got, err := getFrom(nd.netns, "http://"+second.Status.PodIP+":8080/hostname"); err != nil || got != "again" {
		t.Errorf("GET after restart: %q %v", got, err)
	}
}

// TestBinder binds unscheduled pods round-robin and honours a hostname nodeSelector.
func TestBinder(t *testing.T) {
	cs := startControlPlane(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- kubelet.RunBinder(ctx, cs, []string{"a", "b"}) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("RunBinder: %v", err)
		}
	}()
	for i := range 4 {
		p := echoPod(fmt.Sprintf("p%d", i), "")
		p.Labels = map[string]string{"test": "binder"}
		if i == 3 {
			p.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": "a"}
		}
		if _, err := cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	count := map[string]int{}
	waitFor(t, "every pod bound", 30*time.Second, func(ctx context.Context) (bool, error) {
		count = map[string]int{}
		pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "test=binder"})
		if err != nil {
			return false, nil
		}
		for _, p := range pods.Items {
			count[p.Spec.NodeName]++
		}
		return count[""] == 0, nil
	})
	p3, _ := cs.CoreV1().Pods("default").Get(ctx, "p3", metav1.GetOptions{})
	if p3.Spec.NodeName != "a" || count["a"] < 1 || count["b"] < 1 {
		t.Errorf("bound: %v, p3 on %q", count, p3.Spec.NodeName)
	}
}

// TestHostNetworkCrashesBadImagesAndOutage covers the rest of a pod's life: a hostNetwork pod serves
// on the node's IP; a container that cannot bind its port is restarted and keeps the pod unready; an
// image the lab has no program for waits with an Event; and an API-server outage leaves running pods
// serving and the kubelet working once the API server is back.
func TestHostNetworkCrashesBadImagesAndOutage(t *testing.T) {
	cs, cp := startControlPlaneOf(t)
	nd := newNode(t, cs, 9)
	run(t, "ip", "-n", nd.netns, "addr", "add", "192.0.2.19/32", "dev", "lo")
	startKubelet(t, nd)
	ctx := context.Background()
	pods := cs.CoreV1().Pods("default")

	host := echoPod("host", nd.name)
	host.Spec.HostNetwork = true
	host.Spec.Containers[0].Ports[0].ContainerPort = 8090
	crash := echoPod("crash", nd.name)
	crash.Spec.Containers = append(crash.Spec.Containers, crash.Spec.Containers[0])
	crash.Spec.Containers[1].Name = "twin"
	bad := echoPod("bad", nd.name)
	bad.Spec.Containers[0].Image = "nginx:1.27"
	for _, p := range []*corev1.Pod{host, crash, bad} {
		if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	var hp *corev1.Pod
	waitFor(t, "the hostNetwork pod Ready", time.Minute, func(ctx context.Context) (bool, error) {
		p, err := pods.Get(ctx, "host", metav1.GetOptions{})
		hp = p
		return err == nil && podReady(p), nil
	})
	if hp.Status.PodIP != "192.0.2.19" || hp.Status.HostIP != "192.0.2.19" {
		t.Errorf("hostNetwork pod IP %s host IP %s, want the node's 192.0.2.19", hp.Status.PodIP, hp.Status.HostIP)
	}
	if got, err := getFrom(nd.netns, "http://192.0.2.19:8090/hostname"); err != nil || got != "host" {
		t.Errorf("GET the hostNetwork pod: %q %v", got, err)
	}

	waitFor(t, "a restarted container in the crashing pod", time.Minute, func(ctx context.Context) (bool, error) {
		p, err := pods.Get(ctx, "crash", metav1.GetOptions{})
		if err != nil || podReady(p) {
			return false, nil
		}
		for _, c := range p.Status.ContainerStatuses {
			if last := c.LastTerminationState.Terminated; c.RestartCount >= 1 && last != nil && last.ExitCode == 1 {
				return true, nil
			}
		}
		return false, nil
	})

	waitFor(t, "the bad image waiting with an Event", 30*time.Second, func(ctx context.Context) (bool, error) {
		p, err := pods.Get(ctx, "bad", metav1.GetOptions{})
		if err != nil || len(p.Status.ContainerStatuses) == 0 || p.Status.ContainerStatuses[0].State.Waiting == nil ||
			p.Status.ContainerStatuses[0].State.Waiting.Reason != "ErrImagePull" {
			return false, nil
		}
		evs, err := cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=bad"})
		return err == nil && len(evs.Items) > 0 && evs.Items[0].Reason == "ErrImagePull", nil
	})

	if err := cp.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	// Longer than a heartbeat: the kubelet's writes fail meanwhile, and the pod must keep serving.
	time.Sleep(12 * time.Second)
	if got, err := getFrom(nd.netns, "http://192.0.2.19:8090/hostname"); err != nil || got != "host" {
		t.Errorf("GET during the API outage: %q %v", got, err)
	}
	if err := cp.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pods.Delete(ctx, "host", metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(1))}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the hostNetwork pod deleted after the outage", time.Minute, func(ctx context.Context) (bool, error) {
		_, err := pods.Get(ctx, "host", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if _, err := getFrom(nd.netns, "http://192.0.2.19:8090/hostname"); err == nil {
		t.Error("the deleted hostNetwork pod still answers")
	}
}
