package e2e

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/baregate/baregate/internal/lab"
	"github.com/baregate/baregate/internal/lab/echo"
	"github.com/baregate/baregate/test/e2e/framework"
)

// announcedByAnnotation is lbip's annotation naming the node that answers ARP for a Service's IP.
const announcedByAnnotation = "baregate.io/announced-by"

// TestLoadBalancerIPReachableThroughARP: a LoadBalancer Service gets an IP from its pool, the client
// reaches the pods on it, and the client learnt the IP's MAC from the node the Service names.
func TestLoadBalancerIPReachableThroughARP(t *testing.T) {
	f := env.Lab(t)
	ns := f.Namespace()
	pool := addPool(t, f, ns, "203.0.113.200-203.0.113.201")
	f.Apply(ns, framework.EchoApp("echo", 3, "")+framework.Service("echo", "LoadBalancer", "app: echo", pool, "Cluster"))
	pods := podNames(f.WaitPodsReady(ns, "app=echo", 3))
	f.WaitReadyEndpoints(ns, "echo", 3)
	ip := waitServiceIP(t, f, ns, "echo", "203.0.113.200", "203.0.113.201")
	node := waitAnnouncedBy(t, f, ns, "echo")

	r := curlEcho(t, f, "http://"+net.JoinHostPort(ip, "80")+"/arp")
	if r.Service != "echo" || r.Namespace != ns || !slices.Contains(pods, r.Pod) || r.Path != "/arp" {
		t.Errorf("the LB IP %s answered %+v; want service echo in %s from one of %v", ip, r, ns, pods)
	}
	mac := nodeMAC(t, f, node)
	out, err := f.ExecClient(1, "ip", "neigh", "show", ip, "dev", "eth0")
	if err != nil || !strings.Contains(strings.ToLower(out), mac) {
		t.Errorf("client1's neighbour entry for %s is %q (%v); want the MAC %s of %s, the announcing node", ip, out, err, mac, node)
	}
}

// TestNodePortOnEveryNode: the client reaches a NodePort Service on every node's LAN IP.
func TestNodePortOnEveryNode(t *testing.T) {
	f := env.Lab(t)
	ns := f.Namespace()
	f.Apply(ns, framework.EchoApp("echo", 2, "")+framework.Service("echo", "NodePort", "app: echo", "", ""))
	pods := podNames(f.WaitPodsReady(ns, "app=echo", 2))
	f.WaitReadyEndpoints(ns, "echo", 2)
	svc, err := f.Client().CoreV1().Services(ns).Get(f.Ctx, "echo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	port := svc.Spec.Ports[0].NodePort
	if port == 0 {
		t.Fatalf("Service echo has no node port: %+v", svc.Spec.Ports)
	}
	for i := 1; i <= 2; i++ {
		v4, _ := lab.NodeIPs(i)
		r := curlEcho(t, f, "http://"+net.JoinHostPort(v4, strconv.Itoa(int(port)))+"/np")
		if r.Service != "echo" || r.Namespace != ns || !slices.Contains(pods, r.Pod) {
			t.Errorf("node%d's node port %s:%d answered %+v; want service echo from one of %v", i, v4, port, r, pods)
		}
	}
}

// TestClusterIPFromPod: a pod reaches a ClusterIP Service, and through it backends on both nodes.
func TestClusterIPFromPod(t *testing.T) {
	f := env.Lab(t)
	ns := f.Namespace()
	f.Apply(ns, echoPod("probe", "node1"))
	for i := 1; i <= 2; i++ {
		f.Apply(ns, strings.Replace(echoPod(fmt.Sprintf("backend%d", i), lab.NodeName(i)), "labels: {app: backend"+strconv.Itoa(i)+"}", "labels: {app: backend}", 1))
	}
	f.Apply(ns, `
apiVersion: v1
kind: Service
metadata:
  name: backend
spec:
  selector: {app: backend}
  ports:
  - {name: http, port: 8080, targetPort: 3000}
`)
	f.WaitPodsReady(ns, "app=probe", 1)
	f.WaitPodsReady(ns, "app=backend", 2)
	f.WaitReadyEndpoints(ns, "backend", 2)
	svc, err := f.Client().CoreV1().Services(ns).Get(f.Ctx, "backend", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + net.JoinHostPort(svc.Spec.ClusterIP, "8080") + "/hostname"
	seen := map[string]bool{}
	f.WaitFor(time.Minute, "the probe pod to reach both backends through ClusterIP "+svc.Spec.ClusterIP, func(ctx context.Context) (bool, error) {
		out, err := f.ExecPod(ns, "probe", "curl", "-sS", "--max-time", "3", url)
		if err != nil {
			return false, err
		}
		got := strings.TrimSpace(out)
		if got != "backend1" && got != "backend2" {
			return false, fmt.Errorf("%s answered %q, not a backend's name", url, got)
		}
		seen[got] = true
		return len(seen) == 2, nil
	})
}

// TestIngressHostThroughLBIP: an Ingress of a baregate IngressClass is served on the LoadBalancer IP of
// a Service selecting the gateways; an unknown host gets no backend.
func TestIngressHostThroughLBIP(t *testing.T) {
	f := env.Lab(t)
	ns := f.Namespace()
	pool := addPool(t, f, ns, "203.0.113.202-203.0.113.203")
	class := f.AddIngressClass(ns+"-class", "baregate.io/ingress")
	gwSvc := ns + "-ingress"
	// The gateways' Pods name their port 80 "http", like the echo pods.
	f.Apply(lab.GatewayNamespace, framework.Service(gwSvc, "LoadBalancer", lab.GatewayAppLabel+": "+lab.GatewayApp, pool, "Local"))
	t.Cleanup(func() {
		_ = f.Client().CoreV1().Services(lab.GatewayNamespace).Delete(context.Background(), gwSvc, metav1.DeleteOptions{})
	})
	f.Apply(ns, framework.EchoApp("echo", 2, "web")+framework.Service("echo", "ClusterIP", "app: echo", "", "")+ingress("web", class, "e2e.example", ""))
	pods := podNames(f.WaitPodsReady(ns, "app=echo", 2))
	f.WaitReadyEndpoints(ns, "echo", 2)
	ip := waitServiceIP(t, f, lab.GatewayNamespace, gwSvc, "203.0.113.202", "203.0.113.203")

	r := curlEcho(t, f, "--resolve", "e2e.example:80:"+ip, "http://e2e.example/some/path")
	if r.Host != "e2e.example" || r.Path != "/some/path" || r.Service != "echo" || r.Ingress != "web" || r.Namespace != ns || !slices.Contains(pods, r.Pod) {
		t.Errorf("http://e2e.example/some/path through %s answered %+v; want host e2e.example from one of %v", ip, r, pods)
	}
	out, err := f.ExecClient(1, "curl", "-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}",
		"--resolve", "other.example:80:"+ip, "http://other.example/")
	if err != nil || strings.TrimSpace(out) != "404" {
		t.Errorf("a host no Ingress names, through %s: status %q (%v); want 404", ip, out, err)
	}
}

// TestExternalTrafficPolicyLocalKeepsClientIP: with externalTrafficPolicy Local the IP is announced
// by the node of the only pod, and the pod sees the client's own address.
func TestExternalTrafficPolicyLocalKeepsClientIP(t *testing.T) {
	f := env.Lab(t)
	ns := f.Namespace()
	pool := addPool(t, f, ns, "203.0.113.204-203.0.113.205")
	f.Apply(ns, framework.EchoApp("echo", 1, "")+framework.Service("echo", "LoadBalancer", "app: echo", pool, "Local"))
	pod := f.WaitPodsReady(ns, "app=echo", 1)[0]
	f.WaitReadyEndpoints(ns, "echo", 1)
	ip := waitServiceIP(t, f, ns, "echo", "203.0.113.204", "203.0.113.205")
	start := time.Now()
	f.WaitFor(time.Minute, "Service echo to be announced by "+pod.Spec.NodeName, func(ctx context.Context) (bool, error) {
		svc, err := f.Client().CoreV1().Services(ns).Get(ctx, "echo", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		got := svc.Annotations[announcedByAnnotation]
		return got == pod.Spec.NodeName, fmt.Errorf("announced by %q", got)
	})
	t.Logf("announced by %s, the pod's node, after %s", pod.Spec.NodeName, time.Since(start).Round(100*time.Millisecond))
	client, _ := lab.ClientIPs(1)
	url := "http://" + net.JoinHostPort(ip, "80") + "/clientip"
	var out string
	var failures []string
	start = time.Now()
	f.WaitFor(time.Minute, "the pod to answer on "+url, func(ctx context.Context) (bool, error) {
		var err error
		out, err = f.ExecClient(1, "curl", "-sS", "--max-time", "3", url)
		if err != nil {
			failures = append(failures, strings.TrimSpace(out))
		}
		return err == nil, err
	})
	t.Logf("%s answered after %s and %d failed tries %q", url, time.Since(start).Round(100*time.Millisecond), len(failures), failures)
	host, _, err := net.SplitHostPort(strings.TrimSpace(out))
	if err != nil || host != client {
		t.Errorf("the pod saw the request from %q; want client1's address %s", out, client)
	}
}

// addPool adds an IPAddressPool that Services must ask for by name, and an L2Advertisement of it,
// both removed when the test ends; it returns the pool's name.
func addPool(t testing.TB, f *framework.T, ns, addresses string) string {
	name := ns + "-pool"
	f.Apply(lab.GatewayNamespace, fmt.Sprintf(`
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: %[1]s
spec:
  addresses: ["%[2]s"]
  autoAssign: false
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata:
  name: %[1]s
spec:
  ipAddressPools: [%[1]s]
`, name, addresses))
	dc := dynamic.NewForConfigOrDie(f.RESTConfig())
	t.Cleanup(func() {
		ctx := context.Background()
		for _, res := range []string{"l2advertisements", "ipaddresspools"} {
			_ = dc.Resource(schema.GroupVersionResource{Group: "metallb.io", Version: "v1beta1", Resource: res}).
				Namespace(lab.GatewayNamespace).Delete(ctx, name, metav1.DeleteOptions{})
		}
	})
	return name
}

func podNames(pods []corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Name)
	}
	return out
}

// waitServiceIP waits for the Service's load-balancer IP and fails unless it is one of want.
func waitServiceIP(t testing.TB, f *framework.T, ns, name string, want ...string) string {
	var ip string
	start := time.Now()
	defer func() {
		t.Logf("Service %s/%s got IP %s after %s", ns, name, ip, time.Since(start).Round(100*time.Millisecond))
	}()
	ip = f.WaitLoadBalancerIP(ns, name)
	if !slices.Contains(want, ip) {
		t.Fatalf("Service %s/%s got IP %s, outside its pool %v", ns, name, ip, want)
	}
	return ip
}

// waitAnnouncedBy waits for the announced-by annotation and returns the node it names.
func waitAnnouncedBy(t testing.TB, f *framework.T, ns, name string) string {
	var node string
	f.WaitFor(time.Minute, "Service "+ns+"/"+name+" to name its announcing node", func(ctx context.Context) (bool, error) {
		svc, err := f.Client().CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		node = svc.Annotations[announcedByAnnotation]
		return node != "", nil
	})
	return node
}

// curlEcho curls from client1 until an echo JSON answer comes, and returns it.
func curlEcho(t testing.TB, f *framework.T, args ...string) echo.Response {
	start := time.Now()
	defer func() {
		t.Logf("client1 got an echo answer from %v after %s", args, time.Since(start).Round(100*time.Millisecond))
	}()
	return f.CurlEcho(1, args...)
}

// nodeMAC is the MAC address of the lab node's LAN interface, lower case.
func nodeMAC(t testing.TB, f *framework.T, node string) string {
	out, err := f.Exec(node, "ip", "-o", "link", "show", "dev", "eth0")
	if err != nil {
		t.Fatalf("reading %s's eth0: %v\n%s", node, err, out)
	}
	fields := strings.Fields(out)
	i := slices.Index(fields, "link/ether")
	if i < 0 || i+1 >= len(fields) {
		t.Fatalf("no MAC in %s's eth0: %q", node, out)
	}
	return strings.ToLower(fields[i+1])
}
