package ui

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baregate/baregate/internal/cluster"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func event(name, component, controller, typ, reason string, at time.Time) *corev1.Event {
	return &corev1.Event{
		ObjectMeta:          metav1.ObjectMeta{Namespace: "shop", Name: name},
		InvolvedObject:      corev1.ObjectReference{Kind: "Service", Namespace: "shop", Name: "web"},
		Type:                typ,
		Reason:              reason,
		Message:             reason + " happened",
		Source:              corev1.EventSource{Component: component},
		ReportingController: controller,
		LastTimestamp:       metav1.NewTime(at),
	}
}

func TestListWarnings(t *testing.T) {
	client := fake.NewClientset(
		event("a", "baregate", "baregate", corev1.EventTypeWarning, "PoolExhausted", fixtureTime.Add(-time.Minute)),
		event("b", "", "baregate", corev1.EventTypeWarning, "BadAnnotation", fixtureTime),
		event("c", "baregate", "baregate", corev1.EventTypeNormal, "IPAllocated", fixtureTime),
		event("d", "kubelet", "kubelet", corev1.EventTypeWarning, "BackOff", fixtureTime),
	)
	got, err := listWarnings(context.Background(), client, "baregate")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Reason != "BadAnnotation" || got[1].Reason != "PoolExhausted" {
		t.Fatalf("warnings = %+v, want BadAnnotation then PoolExhausted", got)
	}
	if got[0].Object != (ObjectRef{Kind: "Service", Namespace: "shop", Name: "web"}) || got[0].Count != 1 {
		t.Errorf("warning = %+v", got[0])
	}
}

// An API-server outage keeps the last warnings on the page, marked stale, and the poller retries.
func TestWarningsSurviveAnOutage(t *testing.T) {
	client := fake.NewClientset(event("a", "baregate", "baregate", corev1.EventTypeWarning, "PoolExhausted", fixtureTime))
	// The fake's reactor chain is not safe to change while in use, so the outage is a switch.
	var outage atomic.Bool
	client.PrependReactor("list", "events", func(k8stesting.Action) (bool, runtime.Object, error) {
		if outage.Load() {
			return true, nil, errors.New("connection refused")
		}
		return false, nil, nil
	})
	cfg := DefaultConfig()
	cfg.Address = "127.0.0.1:0"
	cfg.WarningsInterval = 50 * time.Millisecond
	s, err := New(cfg, cluster.Deps{NodeName: "node-a", Client: client}, Sources{})
	if err != nil {
		t.Fatal(err)
	}
	runServer(t, s)
	eventually(t, "warnings listed", func() bool { return len(s.warn.get().Items) == 1 })

	outage.Store(true)
	eventually(t, "the outage reported", func() bool { return s.warn.get().Error != "" })
	w := s.warn.get()
	if len(w.Items) != 1 || w.Updated == nil {
		t.Errorf("during the outage: %+v, want the last list kept", w)
	}
}
