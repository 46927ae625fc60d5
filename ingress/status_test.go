package ingress

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	fx "github.com/baregate/baregate/ingress/internal/fixture"
	"github.com/baregate/baregate/internal/cluster"
)

func ingressService(ips ...string) *corev1.Service {
	s := fx.Service("baregate-ingress", 80, func(s *corev1.Service) {
		s.Namespace = "baregate-system"
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
	})
	for _, ip := range ips {
		s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
	}
	return s
}

var ingressSvcKey = types.NamespacedName{Namespace: "baregate-system", Name: "baregate-ingress"}

func TestDesiredStatus(t *testing.T) {
	current := fx.Ingress("current", 3, func(i *networkingv1.Ingress) {
		i.Status.LoadBalancer.Ingress = []networkingv1.IngressLoadBalancerIngress{{IP: "203.0.113.10"}}
	})
	stale := fx.Ingress("stale", 2, func(i *networkingv1.Ingress) {
		i.Status.LoadBalancer.Ingress = []networkingv1.IngressLoadBalancerIngress{{IP: "203.0.113.99"}}
	})
	fresh := fx.Ingress("fresh", 1)
	foreign := fx.Ingress("foreign", 0, func(i *networkingv1.Ingress) { i.Spec.IngressClassName = ptr.To("nginx") })
	snap := func(svc ...*corev1.Service) *cluster.Snapshot {
		return fx.Snapshot(cluster.Inputs{Services: svc, Ingresses: []*networkingv1.Ingress{current, stale, fresh, foreign}})
	}
	var names []string
	for _, u := range DesiredStatus(snap(ingressService("203.0.113.10")), ingressSvcKey) {
		names = append(names, u.Ingress.Name)
		if len(u.Want) != 1 || u.Want[0].IP != "203.0.113.10" {
			t.Errorf("%s: want status %v", u.Ingress.Name, u.Want)
		}
	}
	if got := strings.Join(names, ","); got != "stale,fresh" {
		t.Errorf("updates for %s, want stale,fresh (never the foreign class, not the current one)", got)
	}
	if u := DesiredStatus(snap(), ingressSvcKey); len(u) != 0 {
		t.Errorf("with the ingress Service missing, %d updates; want none (no wiping)", len(u))
	}
	if u := DesiredStatus(snap(ingressService()), ingressSvcKey); len(u) != 2 || u[0].Ingress != current || u[1].Ingress != stale || u[0].Want != nil {
		t.Errorf("with the ingress Service without address: %+v; want current and stale cleared", u)
	}
}

// TestLeaderWritesStatusAndEvents: as leader, the component writes the Service address into served
// Ingresses only and reports a bad Ingress with a Warning Event, while the good route keeps serving.
func TestLeaderWritesStatusAndEvents(t *testing.T) {
	h := newHarness(t)
	web := startBackend(t, "web", false, okHandler)
	good := simple("good.example.com", "web", web.addr)
	bad := fx.Ingress("bad", 0, fx.Rule("bad.example.com", fx.Path("Prefix", "/", fx.Backend("missing", 80))))
	foreign := fx.Ingress("foreign", 0, func(i *networkingv1.Ingress) { i.Spec.IngressClassName = ptr.To("nginx") })
	ctx := context.Background()
	for _, ing := range []*networkingv1.Ingress{good.Ingresses[0], bad, foreign} {
		if _, err := h.client.NetworkingV1().Ingresses("default").Create(ctx, ing, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	in := good
	in.Ingresses = append(in.Ingresses, bad, foreign)
	in.Services = append(in.Services, ingressService("203.0.113.10"))
	h.apply(in)

	leadCtx, stop := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- h.ing.RunLeader(leadCtx) }()
	defer func() { stop(); <-done }()

	select {
	case ev := <-h.recorder.Events:
		if !strings.Contains(ev, "Warning ServiceNotFound") || !strings.Contains(ev, "default/missing") {
			t.Errorf("event %q", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no Event for the bad Ingress")
	}
	waitFor(t, func() bool {
		got, _ := h.client.NetworkingV1().Ingresses("default").Get(ctx, "bad", metav1.GetOptions{})
		return len(got.Status.LoadBalancer.Ingress) == 1 && got.Status.LoadBalancer.Ingress[0].IP == "203.0.113.10"
	})
	// The writer updates one Ingress after the other: wait for each rather than race the second.
	for _, name := range []string{"web", "bad"} {
		waitFor(t, func() bool {
			got, _ := h.client.NetworkingV1().Ingresses("default").Get(ctx, name, metav1.GetOptions{})
			return len(got.Status.LoadBalancer.Ingress) == 1
		})
	}
	got, _ := h.client.NetworkingV1().Ingresses("default").Get(ctx, "foreign", metav1.GetOptions{})
	if len(got.Status.LoadBalancer.Ingress) != 0 {
		t.Errorf("an Ingress of another class got status %v", got.Status.LoadBalancer)
	}
	for _, a := range h.client.Actions() {
		if a.GetVerb() == "update" && a.GetSubresource() == "status" {
			if obj := a.(k8stesting.UpdateAction).GetObject().(*networkingv1.Ingress); obj.Name == "foreign" {
				t.Error("the foreign Ingress was written")
			}
		}
	}
	if code, _, _ := h.get(&http.Client{}, "good.example.com", "/"); code != 200 {
		t.Errorf("good route answers %d", code)
	}
	if code, _, _ := h.get(&http.Client{}, "bad.example.com", "/"); code != 503 {
		t.Errorf("bad route answers %d, want 503", code)
	}
	// The same problem is not reported again on the next sync.
	h.apply(in)
	select {
	case ev := <-h.recorder.Events:
		t.Errorf("problem reported twice: %q", ev)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestRoutesAndMetrics: the dashboard's route list and the Prometheus counters see the traffic.
func TestRoutesAndMetrics(t *testing.T) {
	h := newHarness(t)
	web := startBackend(t, "web", false, okHandler)
	h.apply(merge(simple("a.example.com", "web", web.addr), simple("b.example.com", "none")))
	c := &http.Client{}
	for range 3 {
		h.get(c, "a.example.com", "/")
	}
	h.get(c, "b.example.com", "/")
	routes := h.ing.Routes()
	if len(routes) != 2 || routes[0].Host != "a.example.com" || routes[0].Requests != 3 || routes[0].Errors != 0 || routes[0].Endpoints != 1 ||
		routes[1].Requests != 1 || routes[1].Errors != 1 || routes[1].Endpoints != 0 {
		t.Errorf("routes %+v", routes)
	}
	if n := h.metric("baregate_ingress_requests_total", "code", "503"); n != 1 {
		t.Errorf("503s counted %v", n)
	}
	if n := h.metric("baregate_ingress_requests_total", "host", "a.example.com"); n != 3 {
		t.Errorf("requests to a.example.com counted %v", n)
	}
	if err := h.ing.Ready(); err != nil {
		t.Errorf("Ready: %v", err)
	}
	if err := h.ing.Healthy(); err != nil {
		t.Errorf("Healthy: %v", err)
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
