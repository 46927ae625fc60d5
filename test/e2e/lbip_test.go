package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/baregate/baregate/internal/lab"
	"github.com/baregate/baregate/internal/lab/echo"
	"github.com/baregate/baregate/test/e2e/framework"
)

// The lbip tests move LoadBalancer IPs between the lab's two nodes (an endpoint moving, a gateway
// killed, a node cut off the LAN) and check where the client's traffic and neighbour entries go.
// Timings are logged for the record; only generous bounds are asserted.

// TestLBIPMovesWithLocalEndpoint: with externalTrafficPolicy Local the IP follows the only endpoint
// from node to node, and the client's neighbour entry follows it.
func TestLBIPMovesWithLocalEndpoint(t *testing.T) {
	f := env.Lab(t)
	ns := f.Namespace()
	pool := addPool(t, f, ns, "203.0.113.210-203.0.113.211")
	f.Apply(ns, webPod("web-node1", "node1")+framework.Service("web", "LoadBalancer", "app: web", pool, "Local"))
	f.WaitPodsReady(ns, "app=web", 1)
	ip := waitServiceIP(t, f, ns, "web", "203.0.113.210", "203.0.113.211")
	url := "http://" + net.JoinHostPort(ip, "80") + "/"
	waitAnnouncedByNode(t, f, ns, "web", "node1")
	if r := curlEcho(t, f, url); r.Pod != "web-node1" {
		t.Fatalf("%s answered from pod %q; want web-node1", url, r.Pod)
	}
	checkNeighbour(t, f, ip, "node1")

	// The only endpoint moves: web-node1 goes, then web-node2 comes. Watch the client meanwhile:
	// refusals after web-node2 first answers would mean node2 answered ARP before its forwarding
	// rules had the endpoint.
	probe := startRequests(t, f, url, 25*time.Second, "")
	time.Sleep(500 * time.Millisecond)
	moved := time.Now()
	if err := f.Client().CoreV1().Pods(ns).Delete(f.Ctx, "web-node1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	f.Apply(ns, webPod("web-node2", "node2"))
	f.WaitPodsReady(ns, "app=web", 1)
	waitAnnouncedByNode(t, f, ns, "web", "node2")
	t.Logf("announced by node2 %s after web-node1's deletion", time.Since(moved).Round(10*time.Millisecond))
	res := probe.wait(t)
	t.Logf("during the move: %s", res.summary(moved))
	if first := res.firstFrom("web-node2"); !first.IsZero() {
		t.Logf("after web-node2 first answered: %s", res.summary(first))
	}
	if r := curlEcho(t, f, url); r.Pod != "web-node2" {
		t.Errorf("%s answered from pod %q after the move; want web-node2", url, r.Pod)
	}
	checkNeighbour(t, f, ip, "node2")
	waitL2Status(t, f, ns, "web", "node2")
}

// TestLBIPFailoverGatewayKilled: killing the owner's gateway moves the IP to the other node, and the
// client's traffic keeps flowing.
func TestLBIPFailoverGatewayKilled(t *testing.T) {
	f := env.Lab(t)
	ns := f.Namespace()
	pool := addPool(t, f, ns, "203.0.113.212-203.0.113.213")
	f.Apply(ns, webPod("web-node1", "node1")+webPod("web-node2", "node2")+framework.Service("web", "LoadBalancer", "app: web", pool, "Cluster"))
	f.WaitPodsReady(ns, "app=web", 2)
	f.WaitReadyEndpoints(ns, "web", 2)
	ip := waitServiceIP(t, f, ns, "web", "203.0.113.212", "203.0.113.213")
	url := "http://" + net.JoinHostPort(ip, "80") + "/"
	owner := waitAnnouncedBy(t, f, ns, "web")
	curlEcho(t, f, url)
	other := otherNode(owner)

	probe := startRequests(t, f, url, 8*time.Second, "")
	time.Sleep(time.Second)
	failed := time.Now()
	f.KillGateway(nodeIndex(t, owner))
	res := probe.wait(t)
	t.Logf("gateway of %s killed at %s: %s", owner, failed.Format("15:04:05.000"), res.summary(failed))
	if !res.flowsAfter(failed) {
		t.Errorf("the client's traffic to %s did not flow again after %s's gateway was killed: %s", ip, owner, res.summary(failed))
	}
	waitAnnouncedByNode(t, f, ns, "web", other)
	checkNeighbour(t, f, ip, other)
	waitL2Status(t, f, ns, "web", other)
}

// waitL2Status waits until MetalLB's ServiceL2Status objects for the Service are exactly one, naming node.
func waitL2Status(t testing.TB, f *framework.T, ns, name, node string) {
	dc := dynamic.NewForConfigOrDie(f.RESTConfig())
	gvr := schema.GroupVersionResource{Group: "metallb.io", Version: "v1beta1", Resource: "servicel2statuses"}
	f.WaitFor(time.Minute, "one ServiceL2Status for "+ns+"/"+name+" naming "+node, func(ctx context.Context) (bool, error) {
		l, err := dc.Resource(gvr).Namespace(lab.GatewayNamespace).List(ctx, metav1.ListOptions{
			LabelSelector: "metallb.io/service-name=" + name + ",metallb.io/service-namespace=" + ns})
		if err != nil {
			return false, err
		}
		var nodes []string
		for _, u := range l.Items {
			got, _, _ := unstructured.NestedString(u.Object, "status", "node")
			nodes = append(nodes, got)
		}
		return len(nodes) == 1 && nodes[0] == node, fmt.Errorf("ServiceL2Status objects name %v", nodes)
	})
}

// TestLBIPNodeCutOff: cutting the owner off the LAN moves the IP and the client's traffic keeps
// flowing; the survivor's NodePort and ingress stop sending requests to the cut node's pods as soon
// as the gossip declares it dead, long before its Node turns NotReady.
func TestLBIPNodeCutOff(t *testing.T) {
	f := env.Lab(t)
	ns := f.Namespace()
	pool := addPool(t, f, ns, "203.0.113.214-203.0.113.215")
	class := f.AddIngressClass(ns+"-class", "baregate.io/ingress")
	f.Apply(ns, webPod("web-node1", "node1")+webPod("web-node2", "node2")+
		framework.Service("web", "LoadBalancer", "app: web", pool, "Cluster")+`
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
spec:
  ingressClassName: `+class+`
  rules:
  - host: cut.example
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: web
            port: {name: http}
`)
	f.WaitPodsReady(ns, "app=web", 2)
	f.WaitReadyEndpoints(ns, "web", 2)
	ip := waitServiceIP(t, f, ns, "web", "203.0.113.214", "203.0.113.215")
	owner := waitAnnouncedBy(t, f, ns, "web")
	survivor := otherNode(owner)
	svc, err := f.Client().CoreV1().Services(ns).Get(f.Ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	survivorIP, _ := lab.NodeIPs(nodeIndex(t, survivor))
	lbURL := "http://" + net.JoinHostPort(ip, "80") + "/"
	npURL := "http://" + net.JoinHostPort(survivorIP, strconv.Itoa(int(svc.Spec.Ports[0].NodePort))) + "/"
	ingURL := "http://" + net.JoinHostPort(survivorIP, "80") + "/"
	curlEcho(t, f, lbURL)
	curlEcho(t, f, npURL)
	curlEcho(t, f, "--resolve", "cut.example:80:"+survivorIP, "http://cut.example/")

	const watch = 10 * time.Second
	lb := startRequests(t, f, lbURL, watch, "")
	np := startRequests(t, f, npURL, watch, "")
	ing := startRequests(t, f, ingURL, watch, "cut.example")
	time.Sleep(2 * time.Second)
	cut := time.Now()
	f.CutNode(nodeIndex(t, owner))
	lbRes, npRes, ingRes := lb.wait(t), np.wait(t), ing.wait(t)
	// The Node is still Ready now: the API server has not yet noticed the missing heartbeats.
	node, err := f.Client().CoreV1().Nodes().Get(f.Ctx, owner, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	stillReady := nodeReady(node)
	t.Logf("%s cut off at %s (compare the gateways' logs); its Node Ready %s later: %v", owner, cut.Format("15:04:05.000"), time.Since(cut).Round(100*time.Millisecond), stillReady)
	t.Logf("LB IP %s: %s", ip, lbRes.summary(cut))
	t.Logf("%s's NodePort: %s", survivor, npRes.summary(cut))
	t.Logf("%s's ingress: %s", survivor, ingRes.summary(cut))
	if !lbRes.flowsAfter(cut) {
		t.Errorf("the client's traffic to %s did not flow again after %s was cut off", ip, owner)
	}
	for what, res := range map[string]requestResult{survivor + "'s NodePort": npRes, survivor + "'s ingress": ingRes} {
		if !res.flowsAfter(cut) {
			t.Errorf("%s still failed at the end, %s after %s was cut off: %s", what, watch, owner, res.summary(cut))
		}
		if pods := res.podsAfterRecovery(cut); pods["web-"+owner] {
			t.Errorf("%s answered from web-%s, on the cut-off node: %v", what, owner, pods)
		}
	}
	if !stillReady {
		t.Errorf("%s's Node turned NotReady within %s, so what the survivor did may not be the gossip's doing", owner, watch)
	}
	waitAnnouncedByNode(t, f, ns, "web", survivor)
	checkNeighbour(t, f, ip, survivor)
	waitL2Status(t, f, ns, "web", survivor)
}

// TestLBIPSharedBetweenServices: two Services sharing an IP through metallb.io/allow-shared-ip (on
// different ports) are announced from one node and both answer on it.
func TestLBIPSharedBetweenServices(t *testing.T) {
	f := env.Lab(t)
	ns := f.Namespace()
	pool := addPool(t, f, ns, "203.0.113.216")
	shared := func(name, port string) string {
		m := framework.Service(name, "LoadBalancer", "app: web", pool, "Cluster")
		m = strings.Replace(m, "  annotations: {", "  annotations: {metallb.io/allow-shared-ip: web, ", 1)
		return strings.Replace(m, "port: 80,", "port: "+port+",", 1)
	}
	f.Apply(ns, webPod("web-node1", "node1")+webPod("web-node2", "node2")+shared("web-a", "80")+shared("web-b", "8080"))
	f.WaitPodsReady(ns, "app=web", 2)
	ipA := waitServiceIP(t, f, ns, "web-a", "203.0.113.216")
	ipB := waitServiceIP(t, f, ns, "web-b", "203.0.113.216")
	a, b := waitAnnouncedBy(t, f, ns, "web-a"), waitAnnouncedBy(t, f, ns, "web-b")
	if a != b {
		t.Errorf("Services sharing %s are announced by %s and %s; want one node", ipA, a, b)
	}
	for _, u := range []string{"http://" + net.JoinHostPort(ipA, "80") + "/", "http://" + net.JoinHostPort(ipB, "8080") + "/"} {
		if r := curlEcho(t, f, u); !strings.HasPrefix(r.Pod, "web-node") {
			t.Errorf("%s answered %+v; want a web pod", u, r)
		}
	}
	checkNeighbour(t, f, ipA, a)
}

// TestLBIPv6ThroughNDP: an IPv6-only LoadBalancer Service gets an address from the IPv6 pool, and the
// client reaches it after resolving it with NDP from the announcing node.
func TestLBIPv6ThroughNDP(t *testing.T) {
	f := env.Lab(t)
	ns := f.Namespace()
	pool := addPool(t, f, ns, "2001:db8:0:2::20-2001:db8:0:2::21")
	m := framework.Service("web", "LoadBalancer", "app: web", pool, "Cluster")
	m = strings.Replace(m, "spec:\n", "spec:\n  ipFamilyPolicy: SingleStack\n  ipFamilies: [IPv6]\n", 1)
	f.Apply(ns, webPod("web-node1", "node1")+webPod("web-node2", "node2")+m)
	f.WaitPodsReady(ns, "app=web", 2)
	ip := waitServiceIP(t, f, ns, "web", "2001:db8:0:2::20", "2001:db8:0:2::21")
	node := waitAnnouncedBy(t, f, ns, "web")
	u := "http://" + net.JoinHostPort(ip, "80") + "/v6"
	if r := curlEcho(t, f, "-g", u); r.Path != "/v6" || !strings.HasPrefix(r.Pod, "web-node") {
		t.Errorf("%s answered %+v; want a web pod", u, r)
	}
	checkNeighbour(t, f, ip, node)
}

// webPod is an echo pod labelled app=web on node, answering with its own name.
func webPod(name, node string) string {
	return fmt.Sprintf(`
---
apiVersion: v1
kind: Pod
metadata:
  name: %[1]s
  labels: {app: web}
spec:
  nodeName: %[2]s
  terminationGracePeriodSeconds: 1
  containers:
  - name: echo
    image: echo
    ports:
    - {name: http, containerPort: 3000}
    env:
    - {name: POD_NAME, value: %[1]s}
    - name: NAMESPACE
      valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
    readinessProbe:
      httpGet: {path: /health, port: http}
      periodSeconds: 1
`, name, node)
}

// otherNode is the lab's other node (the lab has two).
func otherNode(node string) string {
	if node == "node1" {
		return "node2"
	}
	return "node1"
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitAnnouncedByNode waits until the Service's announced-by annotation names node.
func waitAnnouncedByNode(t testing.TB, f *framework.T, ns, name, node string) {
	f.WaitFor(time.Minute, "Service "+ns+"/"+name+" to be announced by "+node, func(ctx context.Context) (bool, error) {
		svc, err := f.Client().CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		got := svc.Annotations[announcedByAnnotation]
		return got == node, fmt.Errorf("announced by %q", got)
	})
}

// checkNeighbour checks, after a request to ip, that client1's neighbour entry for ip holds node's MAC.
func checkNeighbour(t testing.TB, f *framework.T, ip, node string) {
	t.Helper()
	mac := nodeMAC(t, f, node)
	fam := "-4"
	if strings.Contains(ip, ":") {
		fam = "-6"
	}
	f.WaitFor(10*time.Second, "client1's neighbour entry for "+ip+" to be "+node+"'s MAC "+mac, func(ctx context.Context) (bool, error) {
		// A request refreshes a stale entry; its answer does not matter here.
		f.ExecClient(1, "curl", "-sS", "-g", "--max-time", "1", "-o", "/dev/null", "http://"+net.JoinHostPort(ip, "80")+"/")
		out, err := f.ExecClient(1, "ip", fam, "neigh", "show", ip, "dev", "eth0")
		if err != nil {
			return false, err
		}
		return strings.Contains(strings.ToLower(out), mac), fmt.Errorf("neighbour entry %q", strings.TrimSpace(out))
	})
}

// requestLoop sends, from client1, one request after another to a URL for a while.
type requestLoop struct {
	done chan struct{}
	res  requestResult
}

// request is one request of a loop: when it started and ended, the error if it failed, and the
// pod named in the echo answer.
type request struct {
	start, end time.Time
	err        error
	pod        string
}

type requestResult []request

// startRequests sends, from client1, a new connection to url every 10 ms or as soon as the previous
// one is done (each with a 0.5 s limit) for d; host, when set, is the Host header.
func startRequests(t testing.TB, f *framework.T, url string, d time.Duration, host string) *requestLoop {
	l := &requestLoop{done: make(chan struct{})}
	client := &http.Client{
		Timeout:   500 * time.Millisecond,
		Transport: &http.Transport{DialContext: lab.DialContextIn(f.ClientNetns(1)), DisableKeepAlives: true},
	}
	go func() {
		defer close(l.done)
		end := time.Now().Add(d)
		for time.Now().Before(end) && f.Ctx.Err() == nil {
			r := request{start: time.Now()}
			r.pod, r.err = echoPodName(client, url, host)
			r.end = time.Now()
			l.res = append(l.res, r)
			if wait := 10*time.Millisecond - r.end.Sub(r.start); wait > 0 {
				time.Sleep(wait)
			}
		}
	}()
	return l
}

// echoPodName sends one request and returns the pod the echo answer names.
func echoPodName(client *http.Client, url, host string) (string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	if host != "" {
		req.Host = host
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var r echo.Response
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || resp.StatusCode != http.StatusOK || r.Pod == "" {
		return "", fmt.Errorf("status %d, no echo answer", resp.StatusCode)
	}
	return r.Pod, nil
}

// wait returns the loop's requests once it has ended.
func (l *requestLoop) wait(t testing.TB) requestResult {
	t.Helper()
	select {
	case <-l.done:
	case <-time.After(2 * time.Minute):
		t.Fatal("the client's request loop did not end")
	}
	if len(l.res) == 0 {
		t.Fatal("the client's request loop made no request")
	}
	return l.res
}

// firstFrom is the end of the first answer from pod, or zero.
func (res requestResult) firstFrom(pod string) time.Time {
	for _, r := range res {
		if r.pod == pod {
			return r.end
		}
	}
	return time.Time{}
}

func (r request) ok() bool { return r.err == nil }

// lastFailure is the start of the last failed request after since, or zero.
func (res requestResult) lastFailure(since time.Time) time.Time {
	var last time.Time
	for _, r := range res {
		if r.start.After(since) && !r.ok() {
			last = r.start
		}
	}
	return last
}

// flowsAfter reports whether requests succeed at the end of the loop: the last failure after since
// is followed by at least three successes.
func (res requestResult) flowsAfter(since time.Time) bool {
	last := res.lastFailure(since)
	n := 0
	for _, r := range res {
		if r.start.After(since) && r.start.After(last) && r.ok() {
			n++
		}
	}
	return n >= 3
}

// podsAfterRecovery lists the pods that answered after the last failure following since.
func (res requestResult) podsAfterRecovery(since time.Time) map[string]bool {
	last := res.lastFailure(since)
	out := map[string]bool{}
	for _, r := range res {
		if r.start.After(since) && r.start.After(last) && r.ok() {
			out[r.pod] = true
		}
	}
	return out
}

// summary says how many requests failed after since (with the first error of each kind) and when,
// after since, the last failure started and the next answer came: the outage as the client saw it.
func (res requestResult) summary(since time.Time) string {
	failed, total := 0, 0
	kinds := map[string]int{}
	var first, last time.Time
	for _, r := range res {
		if !r.start.After(since) {
			continue
		}
		total++
		if !r.ok() {
			failed++
			kinds[errKind(r.err)]++
			if first.IsZero() {
				first = r.start
			}
			last = r.start
		}
	}
	recovered := ""
	if !last.IsZero() {
		recovered = fmt.Sprintf(", first failure at +%s, last at +%s", first.Sub(since).Round(time.Millisecond), last.Sub(since).Round(time.Millisecond))
		for _, r := range res {
			if r.start.After(last) && r.ok() {
				recovered += fmt.Sprintf(", answered again at +%s", r.end.Sub(since).Round(time.Millisecond))
				break
			}
		}
	}
	return fmt.Sprintf("%d of %d requests failed %v%s", failed, total, kinds, recovered)
}

// errKind condenses an error into what the client saw: refused, timed out, or the error's text.
func errKind(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "connection refused"):
		return "refused"
	case strings.Contains(msg, "Timeout") || strings.Contains(msg, "timeout"):
		return "timeout"
	case strings.Contains(msg, "no route to host"):
		return "no route"
	case strings.Contains(msg, "status"):
		return "bad answer"
	}
	return msg
}
