package ingress

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"

	fx "github.com/baregate/baregate/ingress/internal/fixture"
	"github.com/baregate/baregate/ingress/route"
	"github.com/baregate/baregate/internal/cluster"
)

// BenchmarkPropagation measures route propagation: from a new Ingress entering a snapshot (the
// snapshot build included) to the first 200 through the proxy, with 10, 1,000 and 5,000 routes
// already in the table. Snapshots come from a cluster.Builder fed the one new Ingress, as the
// gateway makes them. A client keeps requesting an existing route meanwhile; any non-200 it sees
// is reported as errors (the goal is none). Stages, p50 each: snapshot-ms (Build), swap-ms (from
// the snapshot to the new route table being served: the ingress Runner, route.Build, Swap).
func BenchmarkPropagation(b *testing.B) {
	for _, n := range []int{10, 1000, 5000} {
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) { benchPropagation(b, n, 0, false) })
	}
}

// BenchmarkPropagationAtScale is BenchmarkPropagation's 5,000 routes in a cluster of 10,000 other
// Services (one 10-endpoint slice each), with snapshots made as before the Builder ("full": a new
// snapshot from every object, NewSnapshot) and as the gateway makes them now ("incremental").
func BenchmarkPropagationAtScale(b *testing.B) {
	for _, full := range []bool{true, false} {
		b.Run(map[bool]string{true: "snapshot=full", false: "snapshot=incremental"}[full], func(b *testing.B) {
			benchPropagation(b, 5000, 10000, full)
		})
	}
}

func benchPropagation(b *testing.B, existing, others int, full bool) {
	h := newHarness(b)
	web := startBackend(b, "web", false, okHandler)
	svcs, slices_ := serviceInputs("web", web.addr)
	in := cluster.Inputs{Services: svcs, EndpointSlices: slices_, IngressClasses: []*networkingv1.IngressClass{fx.Class()}, NodeName: "node1"}
	for i := range others {
		name := fmt.Sprint("other", i)
		in.Services = append(in.Services, fx.Service(name, 80))
		var eps []fx.EP
		for j := range 10 {
			eps = append(eps, fx.EP{Addr: fmt.Sprintf("198.18.%d.%d:8080", i%250, j+1), Node: "node1"})
		}
		in.EndpointSlices = append(in.EndpointSlices, fx.Slice(name, name+"-1", eps...))
	}
	for i := range existing {
		in.Ingresses = append(in.Ingresses, fx.Ingress(fmt.Sprint("r", i), existing-i, fx.Rule(fmt.Sprintf("r%d.example.com", i), fx.Path("Prefix", "/", fx.Backend("web", 80)))))
	}
	bld := cluster.NewBuilder(in.NodeName, nil)
	// snapshot adds ing and returns the next snapshot, the way the benchmark is told to make it.
	snapshot := func(ing *networkingv1.Ingress) *cluster.Snapshot {
		if full {
			if ing != nil {
				in.Ingresses = append(in.Ingresses, ing)
			}
			return cluster.NewSnapshot(h.gen.Add(1), time.Now(), in)
		}
		if ing != nil {
			bld.Set(ing)
		}
		return bld.Build(h.gen.Add(1), time.Now())
	}
	for _, list := range [][]any{anys(in.Services), anys(in.EndpointSlices), anys(in.IngressClasses), anys(in.Ingresses)} {
		for _, o := range list {
			bld.Set(o)
		}
	}
	h.ing.Update(snapshot(nil))
	waitFor(b, func() bool { t := h.ing.proxy.Table(); return t != nil && len(t.Routes) == existing })

	var errs, reqs atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // a client of an unrelated route, which route changes must never disturb
		defer wg.Done()
		c := &http.Client{}
		for {
			select {
			case <-stop:
				return
			default:
			}
			req, _ := http.NewRequest(http.MethodGet, h.httpURL+"/", nil)
			req.Host = "r0.example.com"
			resp, err := c.Do(req)
			reqs.Add(1)
			if err != nil || resp.StatusCode != 200 {
				errs.Add(1)
			}
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}()
	c := &http.Client{}
	var took, snapTook, swapTook []time.Duration
	b.ResetTimer()
	for i := range b.N {
		host := fmt.Sprintf("new%d.example.com", i)
		oldTable := h.ing.proxy.Table()
		start := time.Now()
		snap := snapshot(fx.Ingress(fmt.Sprint("new", i), -i, fx.Rule(host, fx.Path("Prefix", "/", fx.Backend("web", 80)))))
		built := time.Now()
		h.ing.Update(snap)
		for h.ing.proxy.Table() == oldTable {
			time.Sleep(20 * time.Microsecond)
		}
		snapTook, swapTook = append(snapTook, built.Sub(start)), append(swapTook, time.Since(built))
		for {
			req, _ := http.NewRequest(http.MethodGet, h.httpURL+"/", nil)
			req.Host = host
			resp, err := c.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		took = append(took, time.Since(start))
	}
	b.StopTimer()
	close(stop)
	wg.Wait()
	ms := func(d []time.Duration, q int) float64 {
		slices.Sort(d)
		return float64(d[len(d)*q/100].Microseconds()) / 1000
	}
	b.ReportMetric(ms(took, 50), "p50-ms")
	b.ReportMetric(ms(took, 99), "p99-ms")
	b.ReportMetric(ms(snapTook, 50), "snapshot-ms")
	b.ReportMetric(ms(swapTook, 50), "swap-ms")
	b.ReportMetric(float64(errs.Load()), "client-errors")
	b.ReportMetric(float64(reqs.Load()), "client-requests")
}

func anys[T any](in []T) []any {
	out := make([]any, len(in))
	for i, o := range in {
		out[i] = o
	}
	return out
}

// BenchmarkPropagationStages splits the swap stage of BenchmarkPropagation at 5,000 routes into
// its CPU parts, without the Runner or HTTP: route.Builder.Build of the snapshot with one more
// Ingress (build-ms) and proxy.Swap of the table (swap-ms), each p50.
func BenchmarkPropagationStages(b *testing.B) {
	h := newHarness(b)
	web := startBackend(b, "web", false, okHandler)
	svcs, slices_ := serviceInputs("web", web.addr)
	bld := cluster.NewBuilder("node1", nil)
	for _, o := range append(append(anys(svcs), anys(slices_)...), fx.Class()) {
		bld.Set(o)
	}
	for i := range 5000 {
		bld.Set(fx.Ingress(fmt.Sprint("r", i), 5000-i, fx.Rule(fmt.Sprintf("r%d.example.com", i), fx.Path("Prefix", "/", fx.Backend("web", 80)))))
	}
	var rb route.Builder
	t, _ := rb.Build(bld.Build(h.gen.Add(1), time.Now()))
	h.ing.proxy.Swap(t)
	var builds, swaps []time.Duration
	b.ResetTimer()
	for i := range b.N {
		bld.Set(fx.Ingress(fmt.Sprint("new", i), -i, fx.Rule(fmt.Sprintf("new%d.example.com", i), fx.Path("Prefix", "/", fx.Backend("web", 80)))))
		snap := bld.Build(h.gen.Add(1), time.Now())
		start := time.Now()
		t, _ := rb.Build(snap)
		built := time.Now()
		h.ing.proxy.Swap(t)
		builds, swaps = append(builds, built.Sub(start)), append(swaps, time.Since(built))
	}
	b.StopTimer()
	for _, m := range []struct {
		d    []time.Duration
		unit string
	}{{builds, "build-ms"}, {swaps, "swap-ms"}} {
		slices.Sort(m.d)
		b.ReportMetric(float64(m.d[len(m.d)/2].Microseconds())/1000, m.unit)
	}
}
