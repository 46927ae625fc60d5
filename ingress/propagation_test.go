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
	"github.com/baregate/baregate/internal/cluster"
)

// BenchmarkPropagation measures route propagation: from a new Ingress entering a snapshot (the
// snapshot build included) to the first 200 through the proxy, with 10, 1,000 and 5,000 routes
// already in the table. A client keeps requesting an existing route meanwhile; any non-200 it
// sees is reported as errors (the goal is none).
func BenchmarkPropagation(b *testing.B) {
	for _, n := range []int{10, 1000, 5000} {
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) { benchPropagation(b, n) })
	}
}

func benchPropagation(b *testing.B, existing int) {
	h := newHarness(b)
	web := startBackend(b, "web", false, okHandler)
	svcs, slices_ := serviceInputs("web", web.addr)
	in := cluster.Inputs{Services: svcs, EndpointSlices: slices_, IngressClasses: []*networkingv1.IngressClass{fx.Class()}, NodeName: "node1"}
	for i := range existing {
		in.Ingresses = append(in.Ingresses, fx.Ingress(fmt.Sprint("r", i), existing-i, fx.Rule(fmt.Sprintf("r%d.example.com", i), fx.Path("Prefix", "/", fx.Backend("web", 80)))))
	}
	h.ing.Update(cluster.NewSnapshot(h.gen.Add(1), time.Now(), in))
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
	var took []time.Duration
	b.ResetTimer()
	for i := range b.N {
		host := fmt.Sprintf("new%d.example.com", i)
		start := time.Now()
		in.Ingresses = append(in.Ingresses, fx.Ingress(fmt.Sprint("new", i), -i, fx.Rule(host, fx.Path("Prefix", "/", fx.Backend("web", 80)))))
		h.ing.Update(cluster.NewSnapshot(h.gen.Add(1), time.Now(), in))
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
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(errs.Load()), "client-errors")
	b.ReportMetric(float64(reqs.Load()), "client-requests")
}
