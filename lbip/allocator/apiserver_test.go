package allocator_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/baregate/baregate/internal/cluster"
	"github.com/baregate/baregate/internal/lab"
	"github.com/baregate/baregate/lbip/allocator"
)

// apiWorld is a real API server and the clients an Allocator needs.
type apiWorld struct {
	cs       kubernetes.Interface
	dyn      dynamic.Interface
	recorder record.EventRecorder
}

func startAPIServer(t *testing.T) *apiWorld {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cp, cs := lab.StartTestControlPlane(ctx, t)
	w := &apiWorld{cs: cs}
	var err error
	if w.dyn, err = dynamic.NewForConfig(cp.RESTConfig()); err != nil {
		t.Fatal(err)
	}
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: w.cs.CoreV1().Events("")})
	t.Cleanup(b.Shutdown)
	w.recorder = b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "baregate"})
	return w
}

// snapshot lists what Allocate reads, as the gateway's informers would hand it over.
func (w *apiWorld) snapshot(ctx context.Context) (*cluster.Snapshot, error) {
	svcs, err := w.cs.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	nss, err := w.cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	ul, err := w.dyn.Resource(allocator.PoolResource).Namespace("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	in := cluster.Inputs{}
	for i := range svcs.Items {
		in.Services = append(in.Services, &svcs.Items[i])
	}
	for i := range nss.Items {
		in.Namespaces = append(in.Namespaces, &nss.Items[i])
	}
	for _, u := range ul.Items {
		p := &metallbv1beta1.IPAddressPool{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, p); err != nil {
			return nil, err
		}
		in.Pools = append(in.Pools, p)
	}
	return cluster.NewSnapshot(0, time.Now(), in), nil
}

// lead runs an Allocator as leader, fed a fresh snapshot every 100 ms, until the returned stop is called.
func (w *apiWorld) lead(t *testing.T) (stop func()) {
	t.Helper()
	a, err := allocator.New(allocator.Config{MinSyncPeriod: 50 * time.Millisecond},
		cluster.Deps{Client: w.cs, Recorder: w.recorder, Metrics: prometheus.NewRegistry()}, w.dyn)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() {
		defer func() { done <- struct{}{} }()
		if err := a.RunLeader(ctx); err != nil {
			t.Errorf("RunLeader: %v", err)
		}
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		for ctx.Err() == nil {
			if s, err := w.snapshot(ctx); err == nil {
				a.Update(s)
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return func() { cancel(); <-done; <-done }
}

func lbService(name string, mut ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}},
		},
	}
	for _, m := range mut {
		m(s)
	}
	return s
}

// waitFor polls cond until it returns "" (met) or the minute is up, then fails with cond's last word.
func waitFor(t *testing.T, what string, cond func(ctx context.Context) string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	last := ""
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		if msg := cond(ctx); msg != "" && ctx.Err() == nil {
			last = msg
		} else if msg == "" {
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("%s: %s", what, last)
	}
}

func (w *apiWorld) statusIs(name string, want ...string) func(context.Context) string {
	return func(ctx context.Context) string {
		s, err := w.cs.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		var got []string
		for _, in := range s.Status.LoadBalancer.Ingress {
			got = append(got, in.IP)
		}
		if !slices.Equal(got, want) {
			return fmt.Sprintf("%s has %v, want %v", name, got, want)
		}
		return ""
	}
}

func (w *apiWorld) eventSeen(name, reason, text string) func(context.Context) string {
	return func(ctx context.Context) string {
		evs, err := w.cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err.Error()
		}
		var seen []string
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == name {
				if e.Reason == reason && strings.Contains(e.Message, text) {
					return ""
				}
				seen = append(seen, e.Reason+": "+e.Message)
			}
		}
		return fmt.Sprintf("no %s event with %q on %s; seen %q", reason, text, name, seen)
	}
}

func TestAllocatorAgainstAPIServer(t *testing.T) {
	w := startAPIServer(t)
	ctx := context.Background()
	pool := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
		"metadata": map[string]any{"name": "lab", "namespace": "default"},
		"spec":     map[string]any{"addresses": []any{"203.0.113.10-203.0.113.11", "2001:db8:0:2::/126"}},
	}}
	if _, err := w.dyn.Resource(allocator.PoolResource).Namespace("default").Create(ctx, pool, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating pool: %v", err)
	}
	create := func(s *corev1.Service) {
		t.Helper()
		if _, err := w.cs.CoreV1().Services("default").Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating Service %s: %v", s.Name, err)
		}
	}
	// Creation times have a resolution of a second: start the allocator on the first Service alone
	// so that the order is known.
	create(lbService("web"))
	stop := w.lead(t)
	waitFor(t, "web allocated", w.statusIs("web", "203.0.113.10"))
	create(lbService("dual", func(s *corev1.Service) {
		p := corev1.IPFamilyPolicyRequireDualStack
		s.Spec.IPFamilyPolicy = &p
		s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol}
	}))
	create(lbService("outside", func(s *corev1.Service) {
		s.Annotations = map[string]string{allocator.AnnotationLoadBalancerIPs: "198.51.100.7"}
	}))
	create(lbService("other-class", func(s *corev1.Service) { c := "example.com/lb"; s.Spec.LoadBalancerClass = &c }))

	waitFor(t, "dual allocated", w.statusIs("dual", "2001:db8:0:2::", "203.0.113.11"))
	waitFor(t, "IPAllocated event", w.eventSeen("web", "IPAllocated", "203.0.113.10"))
	waitFor(t, "refusal event", w.eventSeen("outside", "AllocationFailed", allocator.ReasonIPNotInPool))
	waitFor(t, "pool status", func(ctx context.Context) string {
		u, err := w.dyn.Resource(allocator.PoolResource).Namespace("default").Get(ctx, "lab", metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		st, _, _ := unstructured.NestedMap(u.Object, "status")
		want := map[string]any{"assignedIPv4": int64(2), "availableIPv4": int64(0), "assignedIPv6": int64(1), "availableIPv6": int64(3)}
		if fmt.Sprint(st) != fmt.Sprint(want) {
			return fmt.Sprintf("pool status %v, want %v", st, want)
		}
		return ""
	})
	for _, name := range []string{"outside", "other-class"} {
		if msg := w.statusIs(name)(ctx); msg != "" {
			t.Error(msg)
		}
	}
	stop()

	// A new leader (here: a restarted allocator, with no memory) meets a newcomer that sorts first:
	// the holders keep their addresses and the newcomer finds the pool exhausted.
	create(lbService("aaa-new"))
	stop = w.lead(t)
	defer func() { stop() }()
	waitFor(t, "newcomer refused", w.eventSeen("aaa-new", "AllocationFailed", allocator.ReasonPoolExhausted))
	for _, c := range []func(context.Context) string{w.statusIs("web", "203.0.113.10"), w.statusIs("dual", "2001:db8:0:2::", "203.0.113.11"), w.statusIs("aaa-new")} {
		if msg := c(ctx); msg != "" {
			t.Error(msg)
		}
	}

	// A Service that stops being a LoadBalancer gives its address back, and the newcomer gets it.
	web, err := w.cs.CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	web.Spec.Type = corev1.ServiceTypeClusterIP
	web.Spec.Ports[0].NodePort = 0
	if _, err := w.cs.CoreV1().Services("default").Update(ctx, web, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("making web a ClusterIP Service: %v", err)
	}
	waitFor(t, "web released", w.statusIs("web"))
	waitFor(t, "newcomer allocated", w.statusIs("aaa-new", "203.0.113.10"))
}
