package ui

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/baregate/baregate/internal/cluster"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares v, as indented JSON, with testdata/name.json.
func golden(t *testing.T, name string, v any) {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", name+".json")
	if *update {
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden file (run go test ./ui -run %s -update to create it): %v", t.Name(), err)
	}
	if diff := cmp.Diff(string(want), buf.String()); diff != "" {
		t.Errorf("%s differs from the golden file (-want +got); if the change is right, rerun with -update:\n%s", path, diff)
	}
}

func TestBuildMapGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		snap *cluster.Snapshot
		live Live
	}{
		{"lab", fixtureSnapshot(t, 1, fixtureOpts{webReplicas: 3}), fixtureLive()},
		{"lab-scaled-and-deleted", fixtureSnapshot(t, 2, fixtureOpts{webReplicas: 5, dropBroken: true}), fixtureLive()},
		{"lab-no-live-state", fixtureSnapshot(t, 1, fixtureOpts{webReplicas: 3}), Live{}},
		{"empty", cluster.NewSnapshot(0, fixtureTime, cluster.Inputs{NodeName: "node-a"}), Live{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			golden(t, "map-"+tc.name, BuildMap(tc.snap, tc.live))
		})
	}
}

func nodesByID(m *Map) map[string]Node {
	out := map[string]Node{}
	for _, n := range m.Nodes {
		out[n.ID] = n
	}
	return out
}

func edgeSet(m *Map) map[string]Edge {
	out := map[string]Edge{}
	for _, e := range m.Edges {
		out[e.From+" > "+e.To] = e
	}
	return out
}

func lbipRow(m *Map, ip string) LBIPRow {
	for _, r := range m.LBIPs {
		if r.IP == ip {
			return r
		}
	}
	return LBIPRow{}
}

func field(n Node, name string) string {
	for _, f := range n.Fields {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

// The golden files pin the whole output; these spell out the properties the dashboard exists for.
func TestBuildMapTracesTraffic(t *testing.T) {
	m := BuildMap(fixtureSnapshot(t, 1, fixtureOpts{webReplicas: 3}), fixtureLive())
	nodes, edges := nodesByID(m), edgeSet(m)

	for _, path := range [][]string{
		{"host:shop.example.com", `route:shop/shop:shop.example.com"/"`, "svc:shop/web", "pod:shop/web-7d9f8c6b5d-ak", "node:node-a"},
		{"ip:203.0.113.10", "svc:shop/web", "pod:shop/web-7d9f8c6b5d-bl", "node:node-b"},
		{"ip:198.51.100.7", "svc:shop/api", "pod:shop/api-5c4f7b9d8-xk2lp", "node:node-b"},
		{"svc:shop/legacy", "ep:198.18.13.40", "node:node-c"},
	} {
		for i := 1; i < len(path); i++ {
			if _, ok := edges[path[i-1]+" > "+path[i]]; !ok {
				t.Errorf("no edge %s > %s", path[i-1], path[i])
			}
		}
	}
	if ip := nodes["ip:203.0.113.10"]; field(ip, "Announced by") != "node-a" || ip.Sub != "via node-a" || ip.Health != HealthOK {
		t.Errorf("LB IP owner: got %+v, want announced by node-a", ip)
	}
	if row := lbipRow(m, "203.0.113.10"); row.Owner != "node-a" || row.Pool != "default" || row.Since == nil {
		t.Errorf("LB IP row = %+v, want 203.0.113.10 owned by node-a from pool default", row)
	}
	if e := edges["svc:shop/web > pod:shop/web-7d9f8c6b5d-ak"]; e.Label != "80→8080/TCP" {
		t.Errorf("service to pod edge label = %q, want 80→8080/TCP", e.Label)
	}
	if e := edges[`route:shop/shop:shop.example.com"/api" > svc:shop/api`]; e.RequestRate == nil || *e.RequestRate != 10 || *e.ErrorRate != 2.5 {
		t.Errorf("route edge rates = %+v, want 10 req/s and 2.5 errors/s", e)
	}
	if !edges[`route:shop/shop:shop.example.com"/api" > svc:shop/api`].Failing || edges[`route:shop/shop:shop.example.com"/" > svc:shop/web`].Failing {
		t.Error("only the route with 25% errors should be failing, not the one with 0.25%")
	}
	if h := nodes["svc:shop/api"].Health; h != HealthErrors {
		t.Errorf("shop/api with 25%% errors has health %q, want errors", h)
	}
	if h := nodes["pod:shop/api-5c4f7b9d8-qq7zt"].Health; h != HealthTerminating {
		t.Errorf("terminating pod has health %q", h)
	}

	// Headless: drawn with its pods, marked as not forwarded.
	db := nodes["svc:shop/db"]
	if !strings.HasPrefix(db.Sub, "headless") || db.Health != HealthOK || !strings.Contains(field(db, "Cluster IP"), "not forwarded") {
		t.Errorf("headless service: %+v", db)
	}
	// ExternalName: no endpoints, not reported as broken.
	pay := nodes["svc:shop/payments"]
	if pay.Health != HealthExternal || pay.Sub != "ExternalName → payments.example.net" {
		t.Errorf("ExternalName service: %+v", pay)
	}
	for _, e := range m.Edges {
		if e.From == "svc:shop/payments" {
			t.Errorf("ExternalName service has an edge to %s", e.To)
		}
	}
	var noEps []string
	for _, r := range m.NoEndpoints {
		noEps = append(noEps, r.Service+": "+r.Reason)
	}
	if diff := cmp.Diff([]string{"shop/broken: no EndpointSlices yet", "staging/preview: none of 1 endpoints ready"}, noEps); diff != "" {
		t.Errorf("services without endpoints (-want +got):\n%s", diff)
	}
	if n := nodes["ip:pending:staging/preview"]; n.Health != HealthPending {
		t.Errorf("pending LB IP: %+v", n)
	}
	if n := nodes["node:node-c"]; n.Health != HealthDown || !strings.Contains(n.Sub, "gateway down") {
		t.Errorf("NotReady node with a dead gateway: %+v", n)
	}
	if n := nodes["host:shop.example.com"]; n.Health != HealthErrors || !strings.Contains(n.Sub, "valid until 2027-01-29") {
		t.Errorf("host with a failing route: %+v", n)
	}
	if n := nodes["host:admin.example.com"]; n.Health != HealthDown || m.Hosts[0].Cert != "secret missing" {
		t.Errorf("host whose TLS secret is missing: %+v, row %+v", n, m.Hosts[0])
	}
}

func TestBuildMapDeletedObjectsDisappear(t *testing.T) {
	before := BuildMap(fixtureSnapshot(t, 1, fixtureOpts{webReplicas: 3}), fixtureLive())
	after := BuildMap(fixtureSnapshot(t, 2, fixtureOpts{webReplicas: 1, dropBroken: true}), fixtureLive())
	gone := []string{"svc:shop/broken", "host:admin.example.com", `route:shop/admin:admin.example.com"/"`,
		"pod:shop/web-7d9f8c6b5d-bl", "pod:shop/web-7d9f8c6b5d-cm"}
	for _, id := range gone {
		if _, ok := nodesByID(before)[id]; !ok {
			t.Fatalf("fixture lacks %s before the deletion", id)
		}
		if _, ok := nodesByID(after)[id]; ok {
			t.Errorf("%s is still on the map after its object was deleted", id)
		}
	}
	for _, e := range after.Edges {
		for _, id := range gone {
			if e.From == id || e.To == id {
				t.Errorf("edge %s > %s refers to a deleted object", e.From, e.To)
			}
		}
	}
	for _, r := range after.NoEndpoints {
		if r.Service == "shop/broken" {
			t.Error("deleted shop/broken still listed without endpoints")
		}
	}
	for _, h := range after.Hosts {
		if h.Host == "admin.example.com" {
			t.Error("host of a deleted Ingress still listed")
		}
	}
}

// The ingress route table keys hosts lower-cased; a rule written in capitals must still get its rates.
func TestBuildMapMatchesRoutesCaseInsensitively(t *testing.T) {
	in := fixtureInputs(t, fixtureOpts{webReplicas: 1})
	shop := in.Ingresses[0].DeepCopy()
	shop.Spec.Rules[0].Host = "Shop.Example.COM"
	in.Ingresses[0] = shop
	m := BuildMap(cluster.NewSnapshot(1, fixtureTime, in), fixtureLive())
	e, ok := edgeSet(m)[`route:shop/shop:shop.example.com"/api" > svc:shop/api`]
	if !ok || e.RequestRate == nil || *e.RequestRate != 10 {
		t.Errorf("route of a capitalised host: %+v (found %v), want 10 req/s", e, ok)
	}
	if h := nodesByID(m)["host:shop.example.com"]; !strings.HasPrefix(h.Sub, "HTTPS · valid until") {
		t.Errorf("capitalised host lost its TLS certificate: %+v", h)
	}
}

func TestBuildMapIPOwnerStates(t *testing.T) {
	snap := fixtureSnapshot(t, 1, fixtureOpts{webReplicas: 1})
	for _, tc := range []struct {
		name       string
		anns       []cluster.Announcement
		wantHealth Health
		wantStatus string
	}{
		{"announcer off", nil, HealthOK, "owner unknown (lbip off here)"},
		{"not announced", []cluster.Announcement{}, HealthDown, "not announced"},
		{"no eligible node", []cluster.Announcement{{IP: fixtureLive().Announcements[0].IP}}, HealthDown, "no eligible node"},
		{"owned", fixtureLive().Announcements, HealthOK, "announced"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := BuildMap(snap, Live{Announcements: tc.anns})
			n := nodesByID(m)["ip:203.0.113.10"]
			if row := lbipRow(m, "203.0.113.10"); n.Health != tc.wantHealth || row.Status != tc.wantStatus {
				t.Errorf("got health %q status %q, want %q %q", n.Health, row.Status, tc.wantHealth, tc.wantStatus)
			}
		})
	}
}

func TestCertState(t *testing.T) {
	for _, tc := range []struct {
		name     string
		certHost string
		notAfter int // days from the fixture time
		host     string
		want     string
		health   Health
	}{
		{"valid", "a.example.com", 60, "a.example.com", "valid until 2027-01-29", HealthOK},
		{"expiring", "a.example.com", 5, "a.example.com", "expires in 5 days", HealthNotReady},
		{"expired", "a.example.com", -1, "a.example.com", "expired 2026-11-29", HealthDown},
		{"wrong host", "b.example.com", 60, "a.example.com", "not valid for this host", HealthDown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sec := &corev1.Secret{Data: map[string][]byte{corev1.TLSCertKey: selfSigned(t, tc.certHost, fixtureTime.Add(time.Duration(tc.notAfter)*24*time.Hour))}}
			_, issuer, got, h := certState(sec, tc.host, fixtureTime)
			if got != tc.want || h != tc.health || issuer != "self-signed" {
				t.Errorf("certState = %q %q %q, want %q %q self-signed", got, h, issuer, tc.want, tc.health)
			}
		})
	}
	if _, _, got, _ := certState(&corev1.Secret{Data: map[string][]byte{corev1.TLSCertKey: []byte("junk")}}, "a", fixtureTime); got != "no PEM certificate in tls.crt" {
		t.Errorf("junk certificate: %q", got)
	}
}

func TestParsePoolRange(t *testing.T) {
	for _, tc := range []struct {
		in, first, last string
		err             bool
	}{
		{"203.0.113.0/24", "203.0.113.0", "203.0.113.255", false},
		{"203.0.113.7/32", "203.0.113.7", "203.0.113.7", false},
		{"203.0.113.10-203.0.113.20", "203.0.113.10", "203.0.113.20", false},
		{" 203.0.113.10 - 203.0.113.20 ", "203.0.113.10", "203.0.113.20", false},
		{"2001:db8:0:2::/64", "2001:db8:0:2::", "2001:db8:0:2:ffff:ffff:ffff:ffff", false},
		{"2001:db8::1-2001:db8::ff", "2001:db8::1", "2001:db8::ff", false},
		{"203.0.113.20-203.0.113.10", "", "", true},
		{"203.0.113.1-2001:db8::1", "", "", true},
		{"203.0.113.0/33", "", "", true},
		{"pool", "", "", true},
	} {
		first, last, err := ParsePoolRange(tc.in)
		if (err != nil) != tc.err {
			t.Errorf("ParsePoolRange(%q) error = %v, want error %v", tc.in, err, tc.err)
			continue
		}
		if !tc.err && (first.String() != tc.first || last.String() != tc.last) {
			t.Errorf("ParsePoolRange(%q) = %s-%s, want %s-%s", tc.in, first, last, tc.first, tc.last)
		}
	}
}

func FuzzParsePoolRange(f *testing.F) {
	for _, s := range []string{"203.0.113.0/24", "203.0.113.1-203.0.113.9", "2001:db8::/120", "::ffff:1.2.3.4/128", "1.2.3.4-", "-", "fe80::1%eth0-fe80::2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		first, last, err := ParsePoolRange(s)
		if err != nil {
			return
		}
		if last.Less(first) || first.Is4() != last.Is4() {
			t.Errorf("ParsePoolRange(%q) = %s-%s: not an ascending same-family range", s, first, last)
		}
	})
}

func TestComputeRates(t *testing.T) {
	k := RouteKey{Host: "a", Path: "/"}
	k2 := RouteKey{Host: "b", Path: "/"}
	prev := map[RouteKey]cluster.Route{k: {Requests: 100, Errors: 10}, k2: {Requests: 500}}
	cur := map[RouteKey]cluster.Route{k: {Requests: 300, Errors: 20}, k2: {Requests: 50}, {Host: "new"}: {Requests: 9}}
	got := computeRates(prev, cur, 2*time.Second)
	want := map[RouteKey]Rate{k: {Requests: 100, Errors: 5}, k2: {Requests: 25}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rates (-want +got):\n%s", diff)
	}

	tr := rateTracker{window: 2 * time.Second}
	if r := tr.observe(fixtureTime, []cluster.Route{{Host: "a", Path: "/", Requests: 10}}); r != nil {
		t.Errorf("first sample gave rates %v, want none", r)
	}
	if r := tr.observe(fixtureTime.Add(time.Second), []cluster.Route{{Host: "a", Path: "/", Requests: 1000}}); r != nil {
		t.Errorf("a sample within the window gave rates %v", r)
	}
	r := tr.observe(fixtureTime.Add(4*time.Second), []cluster.Route{{Host: "a", Path: "/", Requests: 50}})
	if fmt.Sprint(r) != fmt.Sprint(map[RouteKey]Rate{{Host: "a", Path: "/"}: {Requests: 10}}) {
		t.Errorf("rates over 4s = %v, want 10 req/s", r)
	}
}
