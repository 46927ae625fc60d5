package ingress

import (
	"io"
	"net/http"
	"testing"
)

// BenchmarkProxyPolicy compares a route without annotations (inline checks on the fast path) with
// routes whose annotations send requests through the policy path, to one local backend.
func BenchmarkProxyPolicy(b *testing.B) {
	h := newHarness(b)
	be := startBackend(b, "web", false, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	h.apply(merge(
		annotated("plain.example", "web", nil, be.addr),
		annotated("cors.example", "web", nginxAnn("enable-cors", "true"), be.addr),
		annotated("rewrite.example", "web", nginxAnn("rewrite-target", "/$1", "use-regex", "true"), be.addr),
		annotated("sticky.example", "web", nginxAnn("affinity", "cookie", "limit-rps", "1000000"), be.addr),
	))
	for _, host := range []string{"plain.example", "cors.example", "rewrite.example", "sticky.example"} {
		b.Run(host, func(b *testing.B) {
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			b.ReportAllocs()
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				req, _ := http.NewRequest("GET", h.httpURL+"/", nil)
				req.Host = host
				req.Header.Set("Origin", "https://app.example")
				for pb.Next() {
					resp, err := c.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		})
	}
}
