package echo

import (
	"io"
	"net/http"
	"testing"
)

// BenchmarkHTTP measures one keep-alive HTTP/1.1 round trip on loopback per mode: the static mode
// is the backend the proxy benchmarks use, echo the default answer.
func BenchmarkHTTP(b *testing.B) {
	for _, mode := range []string{ModeStatic, ModeEcho} {
		b.Run(mode, func(b *testing.B) {
			addr, _ := start(b, Config{Mode: mode, Body: "ok\n", Names: testNames})
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			url := "http://" + addr + "/bench"
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := c.Get(url)
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
