package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/baregate/baregate/internal/lab"
	"github.com/baregate/baregate/internal/lab/echo"
	"github.com/baregate/baregate/test/e2e/framework"
)

// npRequestLoop sends requests one after another (a new connection each, so each goes through the NAT
// rules) until stop is closed, and counts answers by pod and the failures.
type npRequestLoop struct {
	mu       sync.Mutex
	ok       int
	byPod    map[string]int
	failures []string
}

func (l *npRequestLoop) run(client *http.Client, url string, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	for {
		select {
		case <-stop:
			return
		default:
		}
		pod, err := func() (string, error) {
			resp, err := client.Get(url)
			if err != nil {
				return "", err
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				return "", err
			}
			if resp.StatusCode != http.StatusOK {
				return "", fmt.Errorf("status %d", resp.StatusCode)
			}
			var r echo.Response
			if err := json.Unmarshal(body, &r); err != nil {
				return "", err
			}
			return r.Pod, nil
		}()
		l.mu.Lock()
		if err != nil {
			l.failures = append(l.failures, time.Now().Format("15:04:05.000")+" "+err.Error())
		} else {
			l.ok++
			l.byPod[pod]++
		}
		l.mu.Unlock()
	}
}

// gracefulEchoApp is a Deployment of n echo pods (agnhost netexec, which the lab runs as echo) that
// keep serving for 3 s after SIGTERM, as a well-behaved app does so that proxies can stop sending it
// new connections before it stops listening.
func gracefulEchoApp(n int) string {
	return fmt.Sprintf(`
apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo
spec:
  replicas: %d
  selector:
    matchLabels: {app: echo}
  template:
    metadata:
      labels: {app: echo}
    spec:
      terminationGracePeriodSeconds: 6
      containers:
      - name: echo
        image: registry.k8s.io/e2e-test-images/agnhost:2.53
        args: [netexec, --http-port=3000, --delay-shutdown=3]
        ports:
        - {name: http, containerPort: 3000}
        env:
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        - name: NAMESPACE
          valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
        - {name: SERVICE_NAME, value: echo}
        readinessProbe:
          httpGet: {path: /health, port: http}
          periodSeconds: 1
`, n)
}

// TestNodePortScalingLosesNoRequests: while client1 sends requests without pause to a NodePort on
// node1 and a pod sends them to the ClusterIP, the Deployment scales up and down and a pod is
// deleted. Pods leave gracefully (the endpoint turns terminating while the pod still serves), so no
// request may fail; the only allowance is one in-flight request per pod that went away, per client.
func TestNodePortScalingLosesNoRequests(t *testing.T) {
	f := env.Lab(t)
	ns := f.Namespace()
	f.Apply(ns, gracefulEchoApp(2)+framework.Service("echo", "NodePort", "app: echo", "", ""))
	f.Apply(ns, echoPod("probe", lab.NodeName(2)))
	f.WaitPodsReady(ns, "app=echo", 2)
	f.WaitPodsReady(ns, "app=probe", 1)
	f.WaitReadyEndpoints(ns, "echo", 2)
	svc, err := f.Client().CoreV1().Services(ns).Get(f.Ctx, "echo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node1, _ := lab.NodeIPs(1)
	urls := map[string]string{
		"client1 -> node1 NodePort": "http://" + net.JoinHostPort(node1, strconv.Itoa(int(svc.Spec.Ports[0].NodePort))) + "/np",
		"probe pod -> ClusterIP":    "http://" + net.JoinHostPort(svc.Spec.ClusterIP, "80") + "/cip",
	}
	froms := map[string]string{
		"client1 -> node1 NodePort": f.ClientNetns(1),
		"probe pod -> ClusterIP":    f.PodNetns(ns, "probe"),
	}
	stop := make(chan struct{})
	loops := map[string]*npRequestLoop{}
	var dones []chan struct{}
	for name, url := range urls {
		client := &http.Client{Timeout: 5 * time.Second,
			Transport: &http.Transport{DialContext: lab.DialContextIn(froms[name]), DisableKeepAlives: true}}
		// The API has the endpoints ready a moment before the gateways have programmed them.
		f.WaitFor(time.Minute, name+" to answer", func(ctx context.Context) (bool, error) {
			resp, err := client.Get(url)
			if err != nil {
				return false, err
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK, nil
		})
		l := &npRequestLoop{byPod: map[string]int{}}
		loops[name] = l
		done := make(chan struct{})
		dones = append(dones, done)
		go l.run(client, url, stop, done)
	}
	stopped := false
	stopLoops := func() {
		if !stopped {
			stopped = true
			close(stop)
			for _, d := range dones {
				<-d
			}
		}
	}
	defer stopLoops()

	scale := func(n int) {
		t.Helper()
		sc, err := f.Client().AppsV1().Deployments(ns).GetScale(f.Ctx, "echo", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		sc.Spec.Replicas = int32(n)
		if _, err := f.Client().AppsV1().Deployments(ns).UpdateScale(f.Ctx, "echo", sc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		f.WaitPodsReady(ns, "app=echo", n)
		f.WaitReadyEndpoints(ns, "echo", n)
		time.Sleep(2 * time.Second) // let requests flow through the new set
	}
	time.Sleep(2 * time.Second)
	scale(4)
	scale(1)
	scale(3)
	pods := f.WaitPodsReady(ns, "app=echo", 3)
	if err := f.Client().CoreV1().Pods(ns).Delete(f.Ctx, pods[0].Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	f.WaitFor(time.Minute, "the Deployment to replace deleted pod "+pods[0].Name, func(ctx context.Context) (bool, error) {
		_, err := f.Client().CoreV1().Pods(ns).Get(ctx, pods[0].Name, metav1.GetOptions{})
		if err == nil {
			return false, errors.New("still there")
		}
		return len(f.WaitPodsReady(ns, "app=echo", 3)) == 3, nil
	})
	f.WaitReadyEndpoints(ns, "echo", 3)
	time.Sleep(2 * time.Second)
	stopLoops()

	// Pods that died: 3 by scaling 4 -> 1, and the deleted one.
	const died = 4
	for name, l := range loops {
		t.Logf("%s: %d answered by %d pods %v; %d failed %q", name, l.ok, len(l.byPod), l.byPod, len(l.failures), l.failures)
		if l.ok < 20 {
			t.Errorf("%s: only %d requests answered; the loop did not run", name, l.ok)
		}
		if len(l.failures) > died {
			t.Errorf("%s: %d requests failed, more than the %d pods that went away", name, len(l.failures), died)
		}
		if len(l.byPod) < 4 {
			t.Errorf("%s: answers came from %d pods; scaling to 4 and replacing pods should show at least 4", name, len(l.byPod))
		}
	}
}

// TestExternalTrafficPolicyLocalDropsWithoutLocalEndpoint: with externalTrafficPolicy Local, the
// NodePort of a node without an endpoint drops (the client times out; no reject, so a load balancer's
// health check, not a refusal, steers traffic), while the endpoint's node answers.
func TestExternalTrafficPolicyLocalDropsWithoutLocalEndpoint(t *testing.T) {
	f := env.Lab(t)
	ns := f.Namespace()
	f.Apply(ns, framework.EchoApp("echo", 1, "")+framework.Service("echo", "NodePort", "app: echo", "", "Local"))
	pod := f.WaitPodsReady(ns, "app=echo", 1)[0]
	f.WaitReadyEndpoints(ns, "echo", 1)
	svc, err := f.Client().CoreV1().Services(ns).Get(f.Ctx, "echo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(int(svc.Spec.Ports[0].NodePort))
	with, without := 1, 2
	if pod.Spec.NodeName == lab.NodeName(2) {
		with, without = 2, 1
	}
	withIP, _ := lab.NodeIPs(with)
	withoutIP, _ := lab.NodeIPs(without)
	url := "http://" + net.JoinHostPort(withIP, port) + "/local"
	f.WaitFor(time.Minute, "the endpoint's node "+lab.NodeName(with)+" to answer on "+url, func(ctx context.Context) (bool, error) {
		_, err := f.ExecClient(1, "curl", "-sS", "--max-time", "3", url)
		return err == nil, err
	})
	// curl exits 28 on a timeout and 7 on a refused connection.
	out, err := f.ExecClient(1, "sh", "-c", "curl -sS --connect-timeout 2 http://"+net.JoinHostPort(withoutIP, port)+"/none; echo exit=$?")
	if want := "exit=28"; !slices.Contains(strings.Split(strings.TrimSpace(out), "\n"), want) {
		t.Errorf("node %s without an endpoint: curl said %q (%v); want a timeout (%s), the packets dropped", lab.NodeName(without), out, err, want)
	}
}
