package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/baregate/baregate/internal/lab"
)

func TestLabControlPlaneIsHealthy(t *testing.T) {
	f := env.Lab(t)
	body, err := f.Client().Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(f.Ctx)
	if err != nil || string(body) != "ok" {
		t.Fatalf("/readyz = %q, %v", body, err)
	}
	nodes, err := f.Client().CoreV1().Nodes().List(f.Ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != 2 {
		t.Fatalf("%d nodes, want 2", len(nodes.Items))
	}
	for i := range nodes.Items {
		n := &nodes.Items[i]
		if !lab.NodeReady(n) || n.Labels["kubernetes.io/hostname"] != n.Name || n.Labels[lab.ZoneLabel] == "" {
			t.Errorf("node %s: ready %v, labels %v", n.Name, lab.NodeReady(n), n.Labels)
		}
	}
	// The gateways run as Ready hostNetwork Pods selected by the chart's label.
	pods, err := f.Client().CoreV1().Pods(lab.GatewayNamespace).List(f.Ctx, metav1.ListOptions{LabelSelector: lab.GatewayAppLabel + "=" + lab.GatewayApp})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 2 {
		t.Fatalf("%d gateway pods, want 2", len(pods.Items))
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		v4, _ := lab.NodeIPs(nodeIndex(t, p.Spec.NodeName))
		if !lab.PodReady(p) || !p.Spec.HostNetwork || p.Status.PodIP != v4 {
			t.Errorf("gateway pod %s: ready %v, hostNetwork %v, IP %s (want %s)", p.Name, lab.PodReady(p), p.Spec.HostNetwork, p.Status.PodIP, v4)
		}
	}
}

const echoDeployment = `
apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo
spec:
  replicas: 3
  selector:
    matchLabels: {app: echo}
  template:
    metadata:
      labels: {app: echo}
    spec:
      containers:
      - name: echo
        image: registry.k8s.io/e2e-test-images/agnhost:2.53
        args: [netexec, --http-port=8080, --udp-port=8081]
        ports:
        - {name: http, containerPort: 8080}
        - {name: udp, containerPort: 8081, protocol: UDP}
        env:
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        readinessProbe:
          httpGet: {path: /health, port: http}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: echo
spec:
  selector: {app: echo}
  ports:
  - {name: http, port: 80, targetPort: http}
`

func TestLabDeploymentPodsBecomeReadyAndEndpointSlicesListThem(t *testing.T) {
	f := env.Lab(t)
	ns := f.Namespace()
	f.Apply(ns, echoDeployment)
	pods := f.WaitPodsReady(ns, "app=echo", 3)
	var podIPs []string
	for _, p := range pods {
		podIPs = append(podIPs, p.Status.PodIP)
		_, cidr, _ := net.ParseCIDR(mustPodCIDR(t, p.Spec.NodeName))
		if !cidr.Contains(net.ParseIP(p.Status.PodIP)) {
			t.Errorf("pod %s on %s has IP %s outside the node's range %s", p.Name, p.Spec.NodeName, p.Status.PodIP, cidr)
		}
	}
	eps := f.WaitReadyEndpoints(ns, "echo", 3)
	slices.Sort(podIPs)
	slices.Sort(eps)
	if !slices.Equal(podIPs, eps) {
		t.Errorf("EndpointSlices list %v, pods have %v", eps, podIPs)
	}
}

func TestLabPodReachesPodOnAnotherNodeByTCPAndUDP(t *testing.T) {
	f := env.Lab(t)
	ns := f.Namespace()
	for i := 1; i <= 2; i++ {
		f.Apply(ns, fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata:
  name: p%d
  labels: {app: pair}
spec:
  nodeName: node%d
  containers:
  - name: echo
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    args: [netexec, --http-port=8080, --udp-port=8081]
    ports: [{containerPort: 8080}]
    readinessProbe:
      httpGet: {path: /health, port: 8080}
      periodSeconds: 1
`, i, i))
	}
	f.WaitPodsReady(ns, "app=pair", 2)
	p2, err := f.Client().CoreV1().Pods(ns).Get(f.Ctx, "p2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	from := f.PodNetns(ns, "p1")
	for _, ip := range p2.Status.PodIPs {
		// TCP: an HTTP request from p1's namespace; agnhost's /hostname answers with the pod name.
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: lab.DialContextIn(from)}}
		resp, err := client.Get("http://" + net.JoinHostPort(ip.IP, "8080") + "/hostname")
		if err != nil {
			t.Errorf("TCP from p1 (node1) to p2 (node2) at %s: %v", ip.IP, err)
			continue
		}
		var buf [64]byte
		n, _ := resp.Body.Read(buf[:])
		resp.Body.Close()
		if got := strings.TrimSpace(string(buf[:n])); got != "p2" {
			t.Errorf("p2 at %s answered /hostname with %q", ip.IP, got)
		}
		// UDP: a datagram echoed by p2.
		conn, err := lab.DialContextIn(from)(f.Ctx, "udp", net.JoinHostPort(ip.IP, "8081"))
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write([]byte("hello from p1")); err != nil {
			t.Errorf("UDP to %s: %v", ip.IP, err)
		}
		n, err = conn.Read(buf[:])
		conn.Close()
		if err != nil || !strings.Contains(string(buf[:n]), "hello from p1") {
			t.Errorf("UDP echo from p2 at %s: %q, %v", ip.IP, buf[:n], err)
		}
	}
}

func TestLabClientReachesNodeIPs(t *testing.T) {
	f := env.Lab(t)
	for i := 1; i <= 2; i++ {
		v4, v6 := lab.NodeIPs(i)
		for _, ip := range []string{v4, v6} {
			if out, err := f.ExecClient(1, "ping", "-c1", "-W2", ip); err != nil {
				t.Errorf("client1 cannot reach node%d at %s: %v\n%s", i, ip, err, out)
			}
		}
		// And a TCP service on the node: the gateway's admin endpoint in the node's namespace.
		if out, err := f.ExecClient(1, "curl", "-sS", "--max-time", "5", "http://"+v4+":9710/healthz"); err != nil {
			t.Errorf("client1 cannot reach node%d's gateway admin port: %v\n%s", i, err, out)
		}
	}
	// Nothing leaves the lab.
	if out, err := f.ExecClient(1, "ip", "route", "get", "8.8.8.8"); err == nil {
		t.Errorf("client1 has a route out of the lab: %s", out)
	}
}

func TestLabDeletingAPodRemovesItsNamespaceAndProcess(t *testing.T) {
	f := env.Lab(t)
	ns := f.Namespace()
	f.Apply(ns, echoPod("short", "node2"))
	f.WaitPodsReady(ns, "app=short", 1)
	netns := f.PodNetns(ns, "short")
	pids, err := lab.NetnsPIDs(f.Ctx, netns)
	if err != nil || len(pids) == 0 {
		t.Fatalf("pod short runs no process in %s: %v %v", netns, pids, err)
	}
	if err := f.Client().CoreV1().Pods(ns).Delete(f.Ctx, "short", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	f.WaitFor(time.Minute, "pod short to be gone with its namespace and process", func(ctx context.Context) (bool, error) {
		_, err := f.Client().CoreV1().Pods(ns).Get(ctx, "short", metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			return false, err
		}
		if _, err := os.Stat("/run/netns/" + netns); err == nil {
			return false, fmt.Errorf("namespace %s still exists", netns)
		}
		for _, pid := range pids {
			if _, err := os.Stat("/proc/" + pid); err == nil {
				return false, fmt.Errorf("process %s still runs", pid)
			}
		}
		return true, nil
	})
}

func TestLabGatewayKillAndRestart(t *testing.T) {
	f := env.Lab(t)
	f.KillGateway(2)
	if f.GatewayRunning(2) {
		t.Fatal("node2's gateway still runs after KillGateway")
	}
	_, err := f.Client().CoreV1().Pods(lab.GatewayNamespace).Get(f.Ctx, lab.GatewayPodName(2), metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("node2's gateway Pod after KillGateway: %v, want NotFound", err)
	}
	f.RestartGateway(2)
	if !f.GatewayRunning(2) {
		t.Fatal("node2's gateway does not run after RestartGateway")
	}
}

func TestLabCutNodeIsolatesIt(t *testing.T) {
	f := env.Lab(t)
	v4, _ := lab.NodeIPs(2)
	f.CutNode(2)
	if _, err := f.ExecClient(1, "ping", "-c1", "-W1", v4); err == nil {
		t.Fatal("client1 reaches node2 after CutNode")
	}
	f.RestoreNode(2)
	f.WaitFor(30*time.Second, "client1 to reach node2 again", func(ctx context.Context) (bool, error) {
		_, err := f.ExecClient(1, "ping", "-c1", "-W1", v4)
		return err == nil, err
	})
}

// TestLabCommandUpAndDownLeaveNothingBehind drives baregate-lab itself: up --detach, status, exec,
// down; afterwards no namespace, link or process of that lab remains.
func TestLabCommandUpAndDownLeaveNothingBehind(t *testing.T) {
	f := env.Lab(t)
	bin := filepath.Join(f.Options().Dir, "bin", "baregate-lab")
	id := "e2edown"
	dir := t.TempDir()
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(f.Ctx, 5*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("baregate-lab %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	t.Cleanup(func() { lab.Cleanup(context.Background(), id) })
	run("up", "--detach", "--id", id, "--dir", dir, "--nodes", "1", "--clients", "1")
	if out := run("status", "--id", id, "--dir", dir); !strings.Contains(out, "node1") {
		t.Errorf("status does not list node1:\n%s", out)
	}
	v4, _ := lab.NodeIPs(1)
	run("exec", "--id", id, "client1", "--", "ping", "-c1", "-W2", v4)
	var info lab.Info
	b, err := os.ReadFile(filepath.Join(dir, "lab.json"))
	if err == nil {
		err = json.Unmarshal(b, &info)
	}
	if err != nil {
		t.Fatal(err)
	}
	run("down", "--id", id, "--dir", dir)
	if left, _ := lab.LabNetns(f.Ctx, id); len(left) > 0 {
		t.Errorf("namespaces left after down: %v", left)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", info.PID)); err == nil {
		t.Errorf("the lab's process %d still runs after down", info.PID)
	}
	if procs, err := lab.ProcessesMentioning(dir); err != nil || len(procs) > 0 {
		t.Errorf("processes of the lab left after down: %v %v", procs, err)
	}
	// Links live only inside the lab's namespaces; none may appear in the host's.
	if out, _ := exec.Command("ip", "-br", "link").Output(); strings.Contains(string(out), id) {
		t.Errorf("host links mention %s after down:\n%s", id, out)
	}
}

func nodeIndex(t *testing.T, name string) int {
	for i := 1; i <= lab.MaxNodes; i++ {
		if lab.NodeName(i) == name {
			return i
		}
	}
	t.Fatalf("%q is not a lab node", name)
	return 0
}

func mustPodCIDR(t *testing.T, node string) string {
	v4, _ := lab.PodCIDRs(nodeIndex(t, node))
	return v4
}

// TestLabAPIOutageKeepsPodsServing stops the lab's API server: pods keep answering clients, and the
// API server comes back with the lab's state.
func TestLabAPIOutageKeepsPodsServing(t *testing.T) {
	f := env.Lab(t)
	ns := f.Namespace()
	f.Apply(ns, echoPod("steady", "node1"))
	pod := f.WaitPodsReady(ns, "app=steady", 1)[0]
	url := "http://" + net.JoinHostPort(pod.Status.PodIP, "3000") + "/"
	diagnose := func() {
		for _, c := range [][]string{{"client1", "ping", "-c1", "-W1", pod.Status.PodIP}, {"client1", "ping", "-c1", "-W1", "192.0.2.11"},
			{"client1", "ip", "neigh"}, {"node1", "ip", "neigh"}, {"node1", "sysctl", "net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter", "net.ipv4.conf.eth0.rp_filter"},
			{"node1", "ip", "route"}, {"node1", "ping", "-c1", "-W1", pod.Status.PodIP}, {"node1", "ping", "-c1", "-W1", "192.0.2.101"}} {
			o, err := f.Exec(c[0], c[1:]...)
			t.Logf("%v: %v\n%s", c, err, o)
		}
		o, err := f.ExecPod(ns, "steady", "ping", "-c1", "-W1", "192.0.2.101")
		t.Logf("pod ping client1: %v\n%s", err, o)
	}
	if out, err := f.ExecClient(1, "curl", "-sS", "--max-time", "5", url); err != nil || !strings.Contains(out, `"pod": "steady"`) {
		diagnose()
		t.Fatalf("client1 does not reach the pod even before the outage: %v\n%s", err, out)
	}
	f.StopAPIServer()
	if _, err := f.Client().CoreV1().Pods(ns).Get(f.Ctx, "steady", metav1.GetOptions{}); err == nil {
		t.Fatal("the API server still answers after StopAPIServer")
	}
	for range 3 {
		if out, err := f.ExecClient(1, "curl", "-sS", "--max-time", "5", url); err != nil || !strings.Contains(out, `"pod": "steady"`) {
			diagnose()
			t.Fatalf("the pod stopped serving during the API outage: %v\n%s", err, out)
		}
		time.Sleep(time.Second)
	}
	f.StartAPIServer()
	if _, err := f.Client().CoreV1().Pods(ns).Get(f.Ctx, "steady", metav1.GetOptions{}); err != nil {
		t.Fatalf("the pod is gone after the API server came back: %v", err)
	}
}

// echoPod is a manifest of a Pod on node running the echo program on port 3000, labelled app=<name>,
// Ready once it answers.
func echoPod(name, node string) string {
	return fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata:
  name: %[1]s
  labels: {app: %[1]s}
spec:
  nodeName: %[2]s
  terminationGracePeriodSeconds: 2
  containers:
  - name: echo
    image: echo
    ports: [{containerPort: 3000}]
    readinessProbe:
      httpGet: {path: /health, port: 3000}
      periodSeconds: 1
`, name, node)
}
