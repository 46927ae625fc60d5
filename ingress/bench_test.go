package ingress

import (
	"fmt"
	"io"
	"net/http"
	"testing"
)

// BenchmarkProxy measures the request path in process: keep-alive clients through the HTTP listener
// to one local backend, over HTTP/1.1 with and without the fast paths, and over h2c (net/http's
// HTTP/2 server). Run with -benchmem; allocations per request are what this watches.
func BenchmarkProxy(b *testing.B) {
	for _, fast := range []bool{true, false} {
		b.Run(fmt.Sprintf("fastpath=%v", fast), func(b *testing.B) { benchProxy(b, fast, false) })
	}
	b.Run("h2c", func(b *testing.B) { benchProxy(b, true, true) })
}

func benchProxy(b *testing.B, fast, h2c bool) {
	h := newHarness(b, func(c *Config) { c.DisableFastPath = !fast })
	body := make([]byte, 64<<10)
	small := []byte("ok\n")
	be := startBackend(b, "web", false, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/64k" {
			w.Write(body)
			return
		}
		w.Write(small)
	})
	h.apply(simple("", "web", be.addr))
	for _, path := range []string{"/small", "/64k"} {
		b.Run(path[1:], func(b *testing.B) {
			tr := &http.Transport{MaxIdleConnsPerHost: 64}
			if h2c {
				tr.Protocols = new(http.Protocols)
				tr.Protocols.SetUnencryptedHTTP2(true)
			}
			c := &http.Client{Transport: tr}
			b.ReportAllocs()
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := c.Get(h.httpURL + path)
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
