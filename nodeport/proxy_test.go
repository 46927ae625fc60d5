package nodeport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/knftables"

	"github.com/baregate/baregate/internal/cluster"
)

// failingNFT fails every transaction while fail is set.
type failingNFT struct {
	*knftables.Fake
	fail bool
}

func (f *failingNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	if f.fail {
		return errors.New("injected failure")
	}
	return f.Fake.Run(ctx, tx)
}

func fakeList(fake *knftables.Fake) func(context.Context) (map[knftables.Family]existingObjects, error) {
	return func(context.Context) (map[knftables.Family]existingObjects, error) {
		out := map[knftables.Family]existingObjects{}
		for fam, tables := range fake.Tables {
			t := tables[TableName]
			if t == nil {
				continue
			}
			out[fam] = existingObjects{Chains: sortedKeys(t.Chains), Sets: sortedKeys(t.Sets), Maps: sortedKeys(t.Maps)}
		}
		return out, nil
	}
}

func TestProxySyncs(t *testing.T) {
	ctx := context.Background()
	fake := knftables.NewFake("", "")
	nft := &failingNFT{Fake: fake}
	var deleted []staleFlow
	recorder := record.NewFakeRecorder(10)
	reg := prometheus.NewRegistry()
	cfg := Config{MasqueradeBit: 14, HealthzTimeout: 60e9, HealthCheckBindAddress: "127.0.0.1"}
	p, err := newProxy(cfg, cluster.Deps{Recorder: recorder, Metrics: reg}, nft, fakeList(fake),
		func() ([]netip.Addr, error) { return nil, nil },
		func(s []staleFlow) (uint, error) { deleted = append(deleted, s...); return uint(len(s)), nil })
	if err != nil {
		t.Fatal(err)
	}
	if p.Ready() == nil {
		t.Error("ready before the first sync")
	}
	// A stale chain from an earlier run must go in the first (full) sync.
	tx := fake.NewTransaction()
	tx.Add(tableObject(knftables.IPv4Family))
	tx.Add(&knftables.Chain{Family: knftables.IPv4Family, Table: TableName, Name: "svc-OLD"})
	if err := fake.Run(ctx, tx); err != nil {
		t.Fatal(err)
	}

	dns := svc("dns", "198.19.0.53", func(s *corev1.Service) {
		s.Spec.Ports[0].Protocol = corev1.ProtocolUDP
		s.Spec.ExternalIPs = []string{"not-an-ip"}
	})
	udpPorts := []discoveryv1.EndpointPort{port("http", corev1.ProtocolUDP, 5353)}
	w := &world{services: []*corev1.Service{dns}, slices: []*discoveryv1.EndpointSlice{
		slice("dns", "dns-1", udpPorts, ep("198.18.1.53", nodeA), ep("198.18.2.53", nodeB)),
	}}
	p.Update(w.snapshot())
	if err := p.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if p.Ready() != nil {
		t.Errorf("not ready after a sync: %v", p.Ready())
	}
	if fake.Tables[knftables.IPv4Family][TableName].Chains["svc-OLD"] != nil {
		t.Error("the full sync left a stale chain")
	}
	st := p.ForwardingStatus()
	if st.Services != 1 || st.Rules == 0 || !strings.Contains(st.Verdicts[svcKey(dns)], "2 endpoints") {
		t.Errorf("status %+v", st)
	}
	select {
	case ev := <-recorder.Events:
		if !strings.Contains(ev, "InvalidExternalIP") {
			t.Errorf("event %q", ev)
		}
	default:
		t.Error("no event for the bad external IP")
	}

	// One endpoint goes: the partial sync deletes its UDP conntrack entries.
	w.slices[0] = slice("dns", "dns-1", udpPorts, ep("198.18.1.53", nodeA))
	p.Update(w.snapshot())
	if err := p.sync(ctx); err != nil {
		t.Fatal(err)
	}
	want := staleFlow{FrontIP: netip.MustParseAddr("198.19.0.53"), FrontPort: 80, Endpoint: netip.MustParseAddrPort("198.18.2.53:5353")}
	if len(deleted) != 1 || deleted[0] != want {
		t.Errorf("deleted conntrack flows %v; want %v", deleted, want)
	}
	select {
	case ev := <-recorder.Events:
		t.Errorf("the same problem was reported again: %q", ev)
	default:
	}

	// A failed transaction makes the next sync a full one.
	nft.fail = true
	w.services = append(w.services, svc("web", "198.19.0.10"))
	p.Update(w.snapshot())
	if err := p.sync(ctx); err == nil {
		t.Fatal("sync succeeded through a failing nft")
	}
	nft.fail = false
	if err := p.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(p.metrics.syncFailures); got != 1 {
		t.Errorf("sync failures metric %v", got)
	}
	if n := testutil.CollectAndCount(p.metrics.syncDuration); n != 2 {
		t.Errorf("want full and partial sync duration series, got %d", n)
	}
	if diff := lineDiff(fake.Dump(), program(t, Build(w.snapshot(), testOpts)).Dump()); diff != "" {
		t.Errorf("after recovery the tables differ from a fresh full sync:\n%s", diff)
	}
}

func TestHealthCheckServer(t *testing.T) {
	healthy := true
	h := newHealthServers("127.0.0.1", func() bool { return healthy })
	defer h.close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := int32(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	key := svcKey(svc("lb", "198.19.0.1"))
	get := func() (int, string, healthBody) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", port))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body healthBody
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, resp.Header.Get("X-Load-Balancing-Endpoint-Weight"), body
	}
	if err := h.update(context.Background(), map[int32]HealthCheck{port: {Service: key, LocalEndpoints: 2}}); err != nil {
		t.Fatal(err)
	}
	if code, weight, body := get(); code != 200 || weight != "2" || body.LocalEndpoints != 2 || body.Service.Name != "lb" || !body.ServiceProxyHealthy {
		t.Errorf("with 2 local endpoints: %d %q %+v", code, weight, body)
	}
	if err := h.update(context.Background(), map[int32]HealthCheck{port: {Service: key}}); err != nil {
		t.Fatal(err)
	}
	if code, weight, _ := get(); code != 503 || weight != "0" {
		t.Errorf("without local endpoints: %d %q", code, weight)
	}
	h.update(context.Background(), map[int32]HealthCheck{port: {Service: key, LocalEndpoints: 1}})
	healthy = false
	if code, _, body := get(); code != 503 || body.ServiceProxyHealthy {
		t.Errorf("with stale rules: %d %+v", code, body)
	}
	h.update(context.Background(), nil)
	if _, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", port)); err == nil {
		t.Error("server still answers after its Service went")
	}
}

func TestStaleUDP(t *testing.T) {
	old := map[string]map[string]bool{
		"198.19.0.53:53":      {"198.18.1.53:5353": true, "198.18.2.53:5353": true},
		":30053":              {"198.18.2.53:5353": true},
		"[2001:db8:2::53]:53": {"[2001:db8:1:1::53]:5353": true},
	}
	cur := map[string]map[string]bool{"198.19.0.53:53": {"198.18.1.53:5353": true}}
	got := staleUDP(old, cur)
	want := []staleFlow{
		{FrontIP: netip.MustParseAddr("198.19.0.53"), FrontPort: 53, Endpoint: netip.MustParseAddrPort("198.18.2.53:5353")},
		{FrontPort: 30053, Endpoint: netip.MustParseAddrPort("198.18.2.53:5353")},
		{FrontIP: netip.MustParseAddr("2001:db8:2::53"), FrontPort: 53, Endpoint: netip.MustParseAddrPort("[2001:db8:1:1::53]:5353")},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
}

// TestPeriodicFullSync checks --nodeport-sync-period: syncs are partial until the period has passed
// since the last full one, then full again, repairing what was changed behind baregate's back.
func TestPeriodicFullSync(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		period    time.Duration
		wantFulls int
	}{{time.Hour, 1}, {time.Nanosecond, 3}} {
		fake := knftables.NewFake("", "")
		cfg := Config{MasqueradeBit: 14, HealthzTimeout: time.Minute, HealthCheckBindAddress: "127.0.0.1", SyncPeriod: tc.period}
		var fulls int
		list := func(ctx context.Context) (map[knftables.Family]existingObjects, error) {
			fulls++
			return fakeList(fake)(ctx)
		}
		p, err := newProxy(cfg, cluster.Deps{}, fake, list, func() ([]netip.Addr, error) { return nil, nil },
			func([]staleFlow) (uint, error) { return 0, nil })
		if err != nil {
			t.Fatal(err)
		}
		w := representative()
		for i := range 3 {
			w.slices[0] = slice("web", "web-1", nil, ep(fmt.Sprintf("198.18.1.%d", 20+i), nodeA))
			p.Update(w.snapshot())
			if err := p.sync(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if fulls != tc.wantFulls {
			t.Errorf("sync period %s: %d full syncs in 3; want %d", tc.period, fulls, tc.wantFulls)
		}
		if diff := lineDiff(fake.Dump(), program(t, Build(w.snapshot(), testOpts)).Dump()); diff != "" {
			t.Errorf("sync period %s: tables differ from a full sync:\n%s", tc.period, diff)
		}
		p.health.close()
	}
}

// TestPartialSyncNeedingNFTForAPickRuleGoesFull checks the way around nft 1.0.6's typeof limit (see
// the package doc): a partial sync that netlink cannot send and that adds a pick-N rule becomes a
// full sync, which nft can apply, instead of failing.
func TestPartialSyncNeedingNFTForAPickRuleGoesFull(t *testing.T) {
	ctx := context.Background()
	fake := knftables.NewFake("", "")
	p, err := newProxy(Config{MasqueradeBit: 14, HealthzTimeout: 60e9}, cluster.Deps{}, fake, fakeList(fake),
		func() ([]netip.Addr, error) { return nil, nil }, func([]staleFlow) (uint, error) { return 0, nil })
	if err != nil {
		t.Fatal(err)
	}
	var sentToNFT int
	p.applyOps = func(ctx context.Context, ops []op) error {
		return p.applyNetlinkOrNFT(ctx, ops, func([]op) error { sentToNFT++; return errNotNetlink })
	}
	w := representative()
	sync := func() {
		t.Helper()
		p.Update(w.snapshot())
		if err := p.sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	sync()
	first := p.lastFull
	// An endpoint count no Service had: pick-3 and nodeport-pick-3 are new.
	w.slices[0] = slice("web", "web-1", nil, ep("198.18.1.10", nodeA), ep("198.18.1.11", nodeA), ep("198.18.2.12", nodeB))
	sync()
	if sentToNFT != 1 || p.lastFull == first {
		t.Errorf("netlink tried %d times, full sync redone: %v; want one try, then a full sync", sentToNFT, p.lastFull != first)
	}
	if got := program(t, Build(w.snapshot(), testOpts)).Dump(); fake.Dump() != got {
		t.Errorf("after the fallback the tables differ from a fresh full sync:\n%s", lineDiff(fake.Dump(), got))
	}
	// A change needing no new pick rule stays partial, through nft.
	w.slices[0] = slice("web", "web-1", nil, ep("198.18.1.10", nodeA), ep("198.18.1.11", nodeA), ep("198.18.2.13", nodeB))
	second := p.lastFull
	sync()
	if p.lastFull != second {
		t.Error("a change without a new pick rule did a full sync")
	}
}
