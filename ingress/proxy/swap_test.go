package proxy

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/baregate/baregate/ingress/annotations"
	fx "github.com/baregate/baregate/ingress/internal/fixture"
	"github.com/baregate/baregate/ingress/route"
	"github.com/baregate/baregate/internal/cluster"
)

// TestSwapOfExtendedTableMatchesFullSwap swaps a series of tables, most of them the previous one
// with an Ingress added (which Swap extends in place of starting over), into one long-lived proxy,
// and each table also into a fresh proxy; the state both serve must be the same, and counters and
// rotations of surviving backends and routes must carry over.
func TestSwapOfExtendedTableMatchesFullSwap(t *testing.T) {
	long := newTestProxy(t)
	cb := cluster.NewBuilder("node1", annotations.SecretRefs)
	cb.Set(fx.Class())
	for i := range 3 {
		name := fmt.Sprint("svc", i)
		cb.Set(fx.Service(name, 80))
		cb.Set(fx.Slice(name, name+"-1", fx.EP{Addr: fmt.Sprintf("198.18.0.%d:8080", i+1), Node: "node1"}))
	}
	var rb route.Builder
	var prev *route.Table
	var prevRot map[route.BackendKey]any
	extended := 0
	for step := range 60 {
		switch {
		case step%10 == 9: // an endpoint change: a full swap that drops one endpoint
			svc := fmt.Sprint("svc", step%3)
			cb.Set(fx.Slice(svc, svc+"-1", fx.EP{Addr: fmt.Sprintf("198.18.1.%d:8080", step), Node: "node1"}))
		case step%10 == 5: // a deletion
			cb.Delete(cluster.KindIngress, types.NamespacedName{Namespace: "default", Name: fmt.Sprint("ing", step-3)})
		default:
			cb.Set(fx.Ingress(fmt.Sprint("ing", step), -step, fx.Rule(fmt.Sprintf("h%d.example.com", step), fx.Path("Prefix", "/", fx.Backend(fmt.Sprint("svc", step%4), 80)))))
		}
		tbl, _ := rb.Build(cb.Build(uint64(step), time.Now()))
		if prev != nil && extends(prev, tbl) {
			extended++
		}
		long.Swap(tbl)
		fresh := newTestProxy(t)
		fresh.Swap(tbl)
		if got, want := proxyState(long), proxyState(fresh); !reflect.DeepEqual(got, want) {
			t.Fatalf("step %d: state after Swap differs from a fresh proxy's:\ngot  %v\nwant %v", step, got, want)
		}
		rot := map[route.BackendKey]any{}
		for k, r := range long.rotations {
			rot[k] = r
			if old, ok := prevRot[k]; ok && old != any(r) {
				t.Fatalf("step %d: the rotation of %v was reset", step, k)
			}
		}
		prev, prevRot = tbl, rot
	}
	if extended < 30 {
		t.Errorf("only %d swaps extended the previous table: the test no longer exercises that path", extended)
	}
}

func newTestProxy(t *testing.T) *Proxy {
	p, err := New(Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// proxyState renders what a Swap leaves behind: the served state by ID and the carried-over maps'
// keys (which must hold exactly what the table uses).
func proxyState(p *Proxy) map[string]any {
	st := p.state.Load()
	out := map[string]any{}
	for i, pl := range st.pools {
		var addrs []string
		for _, e := range pl.eps {
			addrs = append(addrs, e.hostport)
			if p.endpoints[e.addr] != e {
				addrs = append(addrs, "(stale endpoint)")
			}
		}
		out[fmt.Sprint("pool", i)] = fmt.Sprint(addrs, pl.h2c, pl.rr == p.rotations[st.table.Backends[i].Key()], st.backends[i].labels)
	}
	for i, rs := range st.routes {
		out[fmt.Sprint("route", i)] = fmt.Sprint(rs.labels, rs == p.routeStats[st.table.Routes[i].Key()])
	}
	keys := func(m any) []string {
		var ks []string
		for _, k := range reflect.ValueOf(m).MapKeys() {
			ks = append(ks, fmt.Sprint(k.Interface()))
		}
		slices.Sort(ks)
		return ks
	}
	out["endpoints"] = keys(p.endpoints)
	out["rotations"] = keys(p.rotations)
	out["backendStats"] = keys(p.backendStats)
	out["routeStats"] = keys(p.routeStats)
	out["limiters"] = len(p.limiters)
	return out
}
