package ui

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/baregate/baregate/internal/cluster"
	corev1 "k8s.io/api/core/v1"
)

func viewIDs(v *View) []string {
	var ids []string
	for _, n := range v.Nodes {
		ids = append(ids, n.ID)
	}
	slices.Sort(ids)
	return ids
}

func TestBuildViewGolden(t *testing.T) {
	m := BuildMap(fixtureSnapshot(t, 1, fixtureOpts{webReplicas: 3}), fixtureLive())
	for _, tc := range []struct {
		name string
		q    Query
	}{
		{"all", Query{}},
		{"namespace-staging", Query{Namespace: "staging"}},
		{"pods-collapsed", Query{PodLimit: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) { golden(t, "view-"+tc.name, BuildView(m, tc.q)) })
	}
}

func TestBuildViewFilterKeepsWholePaths(t *testing.T) {
	m := BuildMap(fixtureSnapshot(t, 1, fixtureOpts{webReplicas: 3}), fixtureLive())
	for _, tc := range []struct {
		name string
		q    Query
		want []string
	}{
		{"a pod: its Services, their entry points and its node", Query{Text: "web-7d9f8c6b5d-bl"},
			[]string{"host:shop.example.com", "ip:203.0.113.10", "node:node-b", "pod:shop/web-7d9f8c6b5d-bl", `route:shop/shop:shop.example.com"/"`, "svc:shop/web"}},
		{"an IP: everything behind it", Query{Text: "203.0.113.10"},
			[]string{"ip:203.0.113.10", "node:node-a", "node:node-b", "pod:shop/web-7d9f8c6b5d-ak", "pod:shop/web-7d9f8c6b5d-bl", "pod:shop/web-7d9f8c6b5d-cm", "svc:shop/web"}},
		{"an external IP also matches its Service, so the Service's other entries show", Query{Text: "198.51.100.7"},
			[]string{"host:shop.example.com", "ip:198.51.100.7", "node:node-a", "node:node-b", "pod:shop/api-5c4f7b9d8-qq7zt", "pod:shop/api-5c4f7b9d8-xk2lp", `route:shop/shop:shop.example.com"/api"`, "svc:shop/api"}},
		{"case-insensitive, matches details", Query{Text: "PAYMENTS.EXAMPLE"}, []string{"svc:shop/payments"}},
		{"namespace and text", Query{Namespace: "default", Text: "kubernetes"}, []string{"ep:192.0.2.2", "svc:default/kubernetes"}},
		{"nothing", Query{Text: "no-such-thing"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := BuildView(m, tc.q)
			if got := viewIDs(v); !slices.Equal(got, tc.want) {
				t.Errorf("nodes = %q\nwant    %q", got, tc.want)
			}
			for _, e := range v.Edges {
				if !slices.Contains(tc.want, e.From) || !slices.Contains(tc.want, e.To) {
					t.Errorf("edge %s > %s leaves the filtered nodes", e.From, e.To)
				}
			}
		})
	}
}

// bigSnapshot is a cluster of nsCount namespaces with perNS Services of pods pods each.
func bigSnapshot(nsCount, perNS, pods int) *cluster.Snapshot {
	in := cluster.Inputs{NodeName: "node-a"}
	in.Nodes = []*corev1.Node{node("node-a", "192.0.2.11", true), node("node-b", "192.0.2.12", true)}
	ip := 0
	for n := range nsCount {
		ns := fmt.Sprintf("team-%02d", n)
		for s := range perNS {
			ip++
			name := fmt.Sprintf("svc-%03d", s)
			svc := service(ns, name, corev1.ServiceTypeLoadBalancer, fmt.Sprintf("198.19.%d.%d", ip/250, ip%250), 80, 8080)
			svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: fmt.Sprintf("2001:db8:0:2::%x", ip)}}
			var ps []podSpec
			for p := range pods {
				ps = append(ps, podSpec{name: fmt.Sprintf("%s-%d", name, p), node: []string{"node-a", "node-b"}[p%2], ip: fmt.Sprintf("198.18.%d.%d", p, ip%250), ready: p != 0 || s%7 != 0})
			}
			es, podObjs := endpoints(ns, name, 8080, ps...)
			in.Services = append(in.Services, svc)
			in.EndpointSlices = append(in.EndpointSlices, es)
			in.Pods = append(in.Pods, podObjs...)
		}
	}
	return cluster.NewSnapshot(1, fixtureTime, in)
}

func TestBuildViewReadableAt500Services(t *testing.T) {
	m := BuildMap(bigSnapshot(10, 50, 3), Live{})
	v := BuildView(m, Query{})
	if v.Services != 500 || v.Shown != 500 {
		t.Fatalf("view counts %d of %d Services, want 500 of 500", v.Shown, v.Services)
	}
	kinds := map[Kind]int{}
	for _, n := range v.Nodes {
		kinds[n.Kind]++
		if n.Kind == KindService && (n.Count != 50 || n.Expand == "" || !strings.HasPrefix(n.Label, "50 Services")) {
			t.Errorf("Service node %s is not a namespace group of 50: %+v", n.ID, n)
		}
	}
	if kinds[KindIP] != 10 || kinds[KindService] != 10 || kinds[KindEndpoint] != 10 || kinds[KindNode] != 2 {
		t.Errorf("grouped map has %v nodes per kind, want 10 IP groups, 10 Service groups, 10 pod groups, 2 nodes", kinds)
	}
	checkNoOverlap(t, v)

	// Expanding one namespace shows its Services, with pods still folded per Service beyond the limit.
	v = BuildView(m, Query{Expand: []string{"team-03"}, PodLimit: 2})
	var team3 int
	for _, n := range v.Nodes {
		if n.Kind == KindService && n.Namespace == "team-03" {
			team3++
			if n.Count != 0 {
				t.Errorf("expanded namespace still grouped: %+v", n)
			}
		}
		if n.ID == "group:endpoint:svc:team-03/svc-000" && (n.Count != 3 || n.Counts[HealthNotReady] != 1 || n.Health != HealthNotReady) {
			t.Errorf("pod group of team-03/svc-000 = %+v, want 3 pods with 1 not ready", n)
		}
	}
	if team3 != 50 {
		t.Errorf("expanded namespace shows %d Services, want 50", team3)
	}
	checkNoOverlap(t, v)
}

func checkNoOverlap(t testing.TB, v *View) {
	t.Helper()
	cols := map[float64][]ViewNode{}
	for _, n := range v.Nodes {
		cols[n.X] = append(cols[n.X], n)
		if n.Y < 0 || n.Y+v.NodeH > v.Height || n.X+v.NodeW > v.Width {
			t.Errorf("node %s at %v,%v lies outside the %vx%v view", n.ID, n.X, n.Y, v.Width, v.Height)
		}
	}
	for _, col := range cols {
		slices.SortFunc(col, func(a, b ViewNode) int { return int(a.Y - b.Y) })
		for i := 1; i < len(col); i++ {
			if col[i].Y < col[i-1].Y+v.NodeH {
				t.Errorf("nodes %s and %s overlap", col[i-1].ID, col[i].ID)
			}
		}
	}
}

func TestBuildViewLayoutFollowsEdges(t *testing.T) {
	m := BuildMap(fixtureSnapshot(t, 1, fixtureOpts{webReplicas: 3}), fixtureLive())
	v := BuildView(m, Query{})
	checkNoOverlap(t, v)
	pos := map[string]ViewNode{}
	for _, n := range v.Nodes {
		pos[n.ID] = n
	}
	vias := 0
	for _, e := range v.Edges {
		if pos[e.From].X >= pos[e.To].X {
			t.Errorf("edge %s > %s does not run left to right", e.From, e.To)
		}
		if e.Via == nil {
			continue
		}
		vias++
		for _, n := range v.Nodes {
			if n.X == e.Via[0] && e.Via[2]+slotH/2 > n.Y && e.Via[2]-slotH/2 < n.Y+v.NodeH {
				t.Errorf("edge %s > %s runs behind %s", e.From, e.To, n.ID)
			}
		}
	}
	if vias != 3 {
		t.Errorf("%d edges cross the routes column through a slot, want the 3 from IPs to Services", vias)
	}
}

func FuzzBuildViewQuery(f *testing.F) {
	for _, q := range []string{"", "web", "203.0.113", "shop", `"`, "pod:shop/web-7d9f8c6b5d-ak", "\x00"} {
		f.Add(q, "shop", "staging", 2, 1)
	}
	m := BuildMap(fixtureSnapshot(f, 1, fixtureOpts{webReplicas: 6}), fixtureLive())
	f.Fuzz(func(t *testing.T, text, ns, expand string, podLimit, maxServices int) {
		v := BuildView(m, Query{Text: text, Namespace: ns, Expand: []string{expand}, PodLimit: podLimit, MaxServices: maxServices})
		ids := map[string]bool{}
		for _, n := range v.Nodes {
			if ids[n.ID] {
				t.Fatalf("node %s twice", n.ID)
			}
			ids[n.ID] = true
		}
		for _, e := range v.Edges {
			if !ids[e.From] || !ids[e.To] {
				t.Fatalf("edge %s > %s to a node not in the view", e.From, e.To)
			}
		}
		checkNoOverlap(t, v)
	})
}

func BenchmarkBuildMap500Services(b *testing.B) {
	snap := bigSnapshot(10, 50, 3)
	for b.Loop() {
		BuildMap(snap, Live{})
	}
}

func BenchmarkBuildView500Services(b *testing.B) {
	m := BuildMap(bigSnapshot(10, 50, 3), Live{})
	for _, q := range []struct {
		name string
		q    Query
	}{{"grouped", Query{}}, {"one-namespace-expanded", Query{Expand: []string{"team-03"}}}, {"text-filter", Query{Text: "svc-007"}}} {
		b.Run(q.name, func(b *testing.B) {
			for b.Loop() {
				BuildView(m, q.q)
			}
		})
	}
}
