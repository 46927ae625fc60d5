package allocator

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"

	"github.com/baregate/baregate/internal/cluster"
)

type writerWorld struct {
	cs     *fake.Clientset
	rec    *record.FakeRecorder
	reg    *prometheus.Registry
	a      *Allocator
	pools  []*metallbv1beta1.IPAddressPool
	svcs   []*corev1.Service
	writes []string // Services whose status was written, in order
	// react, when set, may fail a status write (after it is recorded in writes).
	react func(*corev1.Service) error
}

func newWriterWorld(t *testing.T, pools []*metallbv1beta1.IPAddressPool, svcs ...*corev1.Service) *writerWorld {
	t.Helper()
	w := &writerWorld{rec: record.NewFakeRecorder(100), reg: prometheus.NewRegistry(), pools: pools, svcs: svcs}
	var objs []runtime.Object
	for _, s := range svcs {
		objs = append(objs, s)
	}
	w.cs = fake.NewSimpleClientset(objs...)
	w.cs.PrependReactor("update", "services", func(act k8stesting.Action) (bool, runtime.Object, error) {
		if act.GetSubresource() != "status" {
			return false, nil, nil
		}
		svc := act.(k8stesting.UpdateAction).GetObject().(*corev1.Service)
		w.writes = append(w.writes, svc.Name)
		if w.react != nil {
			if err := w.react(svc); err != nil {
				return true, nil, err
			}
		}
		return false, nil, nil
	})
	var err error
	// No dynamic client: pool status writes are tested against the API server.
	w.a, err = New(Config{}, cluster.Deps{Client: w.cs, Recorder: w.rec, Metrics: w.reg}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *writerWorld) sync(t *testing.T) error {
	t.Helper()
	w.writes = nil
	w.a.Update(snapshot(w.pools, w.svcs))
	err := w.a.sync(context.Background())
	// Feed back what the API now holds, as the informers would.
	list, lerr := w.cs.CoreV1().Services("").List(context.Background(), metav1.ListOptions{})
	if lerr != nil {
		t.Fatal(lerr)
	}
	w.svcs = nil
	for i := range list.Items {
		w.svcs = append(w.svcs, &list.Items[i])
	}
	return err
}

func (w *writerWorld) events() []string {
	var out []string
	for {
		select {
		case e := <-w.rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func TestWriterReleasesBeforeHandingOver(t *testing.T) {
	pools := []*metallbv1beta1.IPAddressPool{mkPool("a", []string{"203.0.113.10/32"}), mkPool("z", []string{"203.0.113.20/32"}, noAuto)}
	// The older Service leaves the address for another pool; the newer one may take it, but only
	// once the older one's status no longer holds it.
	w := newWriterWorld(t, pools,
		mkSvc("ns", "a-new", 2),
		mkSvc("ns", "z-old", 1, withStatus("203.0.113.10"), withAnn(addrPool, "z")))
	failOld := true
	w.react = func(svc *corev1.Service) error {
		if failOld && svc.Name == "z-old" {
			return errors.New("injected outage")
		}
		return nil
	}
	if err := w.sync(t); err == nil || !strings.Contains(err.Error(), "injected outage") {
		t.Fatalf("sync error %v, want the injected one", err)
	}
	if strings.Join(w.writes, ",") != "z-old" {
		t.Fatalf("writes %v: nothing may be handed over while the release failed", w.writes)
	}
	if ev := w.events(); len(ev) != 0 {
		t.Errorf("events %q after a failed write", ev)
	}
	failOld = false
	if err := w.sync(t); err != nil {
		t.Fatal(err)
	}
	if strings.Join(w.writes, ",") != "z-old,a-new" {
		t.Fatalf("writes %v, want the release first", w.writes)
	}
	ev := w.events()
	if len(ev) != 2 || !strings.Contains(ev[0], "IPAllocated Assigned IP 203.0.113.20 from pool z") || !strings.Contains(ev[1], "IPAllocated Assigned IP 203.0.113.10 from pool a") {
		t.Errorf("events %q", ev)
	}
	if err := w.sync(t); err != nil || len(w.writes) != 0 {
		t.Errorf("a sync in step wrote %v (err %v)", w.writes, err)
	}
	if got := testutil.ToFloat64(w.a.metrics.allocations.WithLabelValues("allocated", "")); got != 2 {
		t.Errorf("allocations metric %v, want 2", got)
	}
	if got := testutil.ToFloat64(w.a.metrics.pool.WithLabelValues("a", "ipv4", "available")); got != 0 {
		t.Errorf("pool a available %v, want 0", got)
	}
}

func TestWriterRefusalsAreToldOnce(t *testing.T) {
	pools := []*metallbv1beta1.IPAddressPool{mkPool("a", []string{"203.0.113.10/32"}), mkPool("bad", []string{"nope"})}
	w := newWriterWorld(t, pools, mkSvc("ns", "a", 1), mkSvc("ns", "b", 2))
	w.pools[1].UID = "bad-uid"
	if err := w.sync(t); err != nil {
		t.Fatal(err)
	}
	ev := strings.Join(w.events(), "\n")
	for _, want := range []string{"Warning InvalidPool", "Normal IPAllocated", "Warning AllocationFailed PoolExhausted"} {
		if !strings.Contains(ev, want) {
			t.Errorf("events %q lack %q", ev, want)
		}
	}
	for range 3 {
		if err := w.sync(t); err != nil {
			t.Fatal(err)
		}
	}
	if ev := w.events(); len(ev) != 0 {
		t.Errorf("standing refusals told again: %q", ev)
	}
	if got := testutil.ToFloat64(w.a.metrics.allocations.WithLabelValues("refused", ReasonPoolExhausted)); got != 1 {
		t.Errorf("refusal metric %v, want 1", got)
	}
	// Once the refused objects are gone, nothing about them is remembered.
	if err := w.cs.CoreV1().Services("ns").Delete(context.Background(), "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	w.pools = w.pools[:1]
	for range 2 { // the first sync still sees b, as informers lag
		if err := w.sync(t); err != nil {
			t.Fatal(err)
		}
	}
	if len(w.a.told) != 0 {
		t.Errorf("still remembered: %v", w.a.told)
	}
}

func TestWriterConflictOnAChangedService(t *testing.T) {
	pools := []*metallbv1beta1.IPAddressPool{mkPool("a", []string{"203.0.113.10/31"})}
	w := newWriterWorld(t, pools, mkSvc("ns", "a", 1), mkSvc("ns", "b", 2))
	conflicts := 0
	w.react = func(svc *corev1.Service) error {
		if conflicts >= 2 {
			return nil
		}
		conflicts++
		if svc.Name == "a" {
			// Someone asked for another address meanwhile: the write must be dropped, not redone.
			fresh := svc.DeepCopy()
			fresh.Status = corev1.ServiceStatus{}
			fresh.Annotations = map[string]string{lbIPs: "203.0.113.11"}
			if err := w.cs.Tracker().Update(schema.GroupVersionResource{Version: "v1", Resource: "services"}, fresh, "ns"); err != nil {
				t.Error(err)
			}
		}
		return apierrors.NewConflict(schema.GroupResource{Resource: "services"}, svc.Name, errors.New("stale"))
	}
	if err := w.sync(t); err != nil {
		t.Fatal(err)
	}
	// a: conflict with changed inputs, skipped. b: conflict with nothing changed, redone.
	if strings.Join(w.writes, ",") != "a,b,b" {
		t.Errorf("writes %v", w.writes)
	}
	ev := w.events()
	if len(ev) != 1 || !strings.Contains(ev[0], "203.0.113.11") {
		t.Errorf("events %q, want b's allocation only", ev)
	}
	// The next sync sees a's new request, and b holds what a asked for.
	if err := w.sync(t); err != nil {
		t.Fatal(err)
	}
	if ev := w.events(); len(ev) != 1 || !strings.Contains(ev[0], "AllocationFailed IPTaken") {
		t.Errorf("events %q", ev)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []struct {
		cfg Config
		ok  bool
	}{{Config{}, true}, {Config{MinSyncPeriod: 1e9}, true}, {Config{MinSyncPeriod: -1}, false}, {Config{MinSyncPeriod: 6 * 60e9}, false}} {
		if err := c.cfg.Validate(); (err == nil) != c.ok {
			t.Errorf("Validate(%+v) = %v", c.cfg, err)
		}
	}
	if _, err := New(Config{}, cluster.Deps{}, nil); err == nil {
		t.Error("New without a client succeeded")
	}
}

func TestWritePools(t *testing.T) {
	dyn := dynamicfake.NewSimpleDynamicClient(runtime.NewScheme())
	patched := map[string]string{}
	dyn.PrependReactor("patch", "ipaddresspools", func(act k8stesting.Action) (bool, runtime.Object, error) {
		p := act.(k8stesting.PatchAction)
		if p.GetSubresource() != "status" {
			t.Errorf("patch of %q, want the status subresource", p.GetSubresource())
		}
		patched[p.GetName()] = string(p.GetPatch())
		gr := schema.GroupResource{Group: "metallb.io", Resource: "ipaddresspools"}
		switch p.GetName() {
		case "gone":
			return true, nil, apierrors.NewNotFound(gr, "gone")
		case "forbidden":
			return true, nil, apierrors.NewForbidden(gr, "forbidden", errors.New("no RBAC"))
		case "broken":
			return true, nil, apierrors.NewInternalError(errors.New("etcd down"))
		}
		return true, nil, nil
	})
	a, err := New(Config{}, cluster.Deps{Client: fake.NewSimpleClientset(), Recorder: record.NewFakeRecorder(10)}, dyn)
	if err != nil {
		t.Fatal(err)
	}
	st := metallbv1beta1.IPAddressPoolStatus{AssignedIPv4: 1, AvailableIPv4: 3}
	ps := func(name string, cur metallbv1beta1.IPAddressPoolStatus, perr error) PoolStatus {
		return PoolStatus{Name: name, Status: st, Err: perr, Object: &metallbv1beta1.IPAddressPool{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "metallb-system"}, Status: cur}}
	}
	err = a.writePools(context.Background(), []PoolStatus{
		ps("fresh", metallbv1beta1.IPAddressPoolStatus{}, nil), ps("same", st, nil), ps("invalid", metallbv1beta1.IPAddressPoolStatus{}, errors.New("bad")),
		ps("gone", metallbv1beta1.IPAddressPoolStatus{}, nil), ps("forbidden", metallbv1beta1.IPAddressPoolStatus{}, nil),
	})
	if err != nil {
		t.Errorf("writePools: %v", err)
	}
	if want := `{"status":{"assignedIPv4":1,"assignedIPv6":0,"availableIPv4":3,"availableIPv6":0}}`; patched["fresh"] != want {
		t.Errorf("patch %s, want %s", patched["fresh"], want)
	}
	if _, ok := patched["same"]; ok {
		t.Error("a pool whose status is in step was written")
	}
	if _, ok := patched["invalid"]; ok {
		t.Error("an invalid pool's status was written")
	}
	if err := a.writePools(context.Background(), []PoolStatus{ps("broken", metallbv1beta1.IPAddressPoolStatus{}, nil)}); err == nil {
		t.Error("a server error was swallowed")
	}
}
