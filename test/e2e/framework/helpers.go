package framework

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/baregate/baregate/internal/lab"
)

// T is the lab seen from one test: every helper fails the test on error, and what a helper changes
// (namespaces, cut cables) is undone when the test ends.
type T struct {
	*lab.Lab
	t testing.TB
	// Ctx ends with the test.
	Ctx context.Context
}

// Client is an admin clientset.
func (f *T) Client() kubernetes.Interface { return f.Lab.Client() }

// Namespace creates a namespace of the test's own, ready for Pods, and deletes it when the test ends.
func (f *T) Namespace() string {
	f.t.Helper()
	name := uniqueName("t", f.t.Name())
	cs := f.Client()
	_, err := cs.CoreV1().Namespaces().Create(f.Ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		f.t.Fatalf("creating namespace %s: %v", name, err)
	}
	f.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := cs.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			f.t.Errorf("deleting namespace %s: %v", name, err)
		}
	})
	f.WaitFor(time.Minute, "the default ServiceAccount of "+name, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	return name
}

// Apply applies a multi-document YAML manifest; objects without a namespace go to ns.
func (f *T) Apply(ns, manifest string) {
	f.t.Helper()
	if err := lab.ApplyInNamespace(f.Ctx, f.RESTConfig(), ns, []byte(manifest)); err != nil {
		f.t.Fatalf("applying manifest: %v", err)
	}
}

// WaitFor polls cond until it holds; after timeout the test fails, naming what it waited for and the
// last error cond returned.
func (f *T) WaitFor(timeout time.Duration, what string, cond func(ctx context.Context) (bool, error)) {
	f.t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(f.Ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		ok, err := cond(ctx)
		last = err
		return ok, nil
	})
	if err != nil {
		f.t.Fatalf("waiting for %s: %v (last error: %v)", what, err, last)
	}
}

// WaitReadyEndpoints waits until the Service's EndpointSlices list n ready IPv4 endpoints and returns them.
func (f *T) WaitReadyEndpoints(ns, svc string, n int) []string {
	f.t.Helper()
	var ips []string
	f.WaitFor(2*time.Minute, fmt.Sprintf("%d ready endpoints of Service %s/%s", n, ns, svc), func(ctx context.Context) (bool, error) {
		ips = lab.ReadyEndpointIPs(ctx, f.Client(), ns, svc)
		return len(ips) == n, nil
	})
	return ips
}

// WaitPodsReady waits until n Pods match the label selector and all are Ready, and returns them.
func (f *T) WaitPodsReady(ns, selector string, n int) []corev1.Pod {
	f.t.Helper()
	var pods []corev1.Pod
	f.WaitFor(2*time.Minute, fmt.Sprintf("%d ready pods %q in %s", n, selector, ns), func(ctx context.Context) (bool, error) {
		l, err := f.Client().CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, err
		}
		pods = l.Items
		ready := 0
		for i := range pods {
			if lab.PodReady(&pods[i]) && pods[i].DeletionTimestamp == nil {
				ready++
			}
		}
		return ready == n && len(pods) == n, nil
	})
	return pods
}

// Exec runs argv on a lab host ("cp", "node1", "client1" ...) and returns its output; a failure is
// returned, not fatal, since tests often expect one.
func (f *T) Exec(host string, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(f.Ctx, time.Minute)
	defer cancel()
	out, err := f.Lab.Exec(ctx, host, argv...)
	return string(out), err
}

// ExecClient runs argv on client i.
func (f *T) ExecClient(i int, argv ...string) (string, error) {
	return f.Exec(lab.ClientName(i), argv...)
}

// ExecPod runs argv in the network namespace of a running Pod.
func (f *T) ExecPod(ns, name string, argv ...string) (string, error) {
	f.t.Helper()
	netns := f.PodNetns(ns, name)
	ctx, cancel := context.WithTimeout(f.Ctx, time.Minute)
	defer cancel()
	out, err := lab.NetnsCommand(ctx, netns, argv...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s in pod %s/%s: %w: %s", strings.Join(argv, " "), ns, name, err, out)
	}
	return string(out), nil
}

// PodNetns is the network namespace of a running Pod.
func (f *T) PodNetns(ns, name string) string {
	f.t.Helper()
	pod, err := f.Client().CoreV1().Pods(ns).Get(f.Ctx, name, metav1.GetOptions{})
	if err != nil {
		f.t.Fatalf("getting pod %s/%s: %v", ns, name, err)
	}
	netns, err := f.Lab.PodNetns(f.Ctx, pod)
	if err != nil {
		f.t.Fatal(err)
	}
	return netns
}

// KillGateway takes node i's gateway away (its Pod deleted at once) until RestartGateway or the end
// of the test.
func (f *T) KillGateway(i int) {
	f.t.Helper()
	if err := f.Lab.KillGateway(f.Ctx, i); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() {
		if !f.GatewayRunning(i) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if err := f.Lab.StartGateway(ctx, i); err != nil {
				f.t.Errorf("restarting the gateway of node%d after the test: %v", i, err)
			}
		}
	})
}

// RestartGateway starts node i's gateway again and waits until it is Ready.
func (f *T) RestartGateway(i int) {
	f.t.Helper()
	if err := f.Lab.StartGateway(f.Ctx, i); err != nil {
		f.t.Fatal(err)
	}
}

// CutNode pulls node i off the LAN until RestoreNode or the end of the test.
func (f *T) CutNode(i int) {
	f.t.Helper()
	if err := f.Lab.CutNode(f.Ctx, i); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() {
		if err := f.Lab.RestoreNode(context.Background(), i); err != nil {
			f.t.Errorf("restoring node%d: %v", i, err)
		}
	})
}

// RestoreNode plugs node i back in.
func (f *T) RestoreNode(i int) {
	f.t.Helper()
	if err := f.Lab.RestoreNode(f.Ctx, i); err != nil {
		f.t.Fatal(err)
	}
}

// StopAPIServer takes the API server away (etcd and the data plane stay) until StartAPIServer or the
// end of the test, to check that an API outage does not disturb traffic.
func (f *T) StopAPIServer() {
	f.t.Helper()
	if err := f.ControlPlane().StopAPIServer(); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := f.ControlPlane().StartAPIServer(ctx); err != nil {
			f.t.Errorf("restarting the API server after the test: %v", err)
		}
	})
}

// StartAPIServer brings the API server back and waits until it is ready.
func (f *T) StartAPIServer() {
	f.t.Helper()
	if err := f.ControlPlane().StartAPIServer(f.Ctx); err != nil {
		f.t.Fatal(err)
	}
}
