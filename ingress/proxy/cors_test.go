package proxy

import (
	"net/http"
	"slices"
	"testing"
)

func TestCORSRestore(t *testing.T) {
	for _, c := range []struct {
		name           string
		proxy, backend http.Header
		want           http.Header
	}{
		{"no CORS headers: the backend's stay", http.Header{"Strict-Transport-Security": {"max-age=1"}},
			http.Header{"Access-Control-Allow-Origin": {"*"}, "Vary": {"Accept"}},
			http.Header{"Access-Control-Allow-Origin": {"*"}, "Vary": {"Accept"}}},
		{"the proxy's win, Vary merged", http.Header{"Access-Control-Allow-Origin": {"https://a.example"}, "Access-Control-Expose-Headers": {"X-A"}, "Vary": {"Origin"}},
			http.Header{"Access-Control-Allow-Origin": {"*"}, "Access-Control-Expose-Headers": {"X-B"}, "Access-Control-Max-Age": {"5"}, "Vary": {"Accept-Encoding, Cookie"}},
			http.Header{"Access-Control-Allow-Origin": {"https://a.example"}, "Access-Control-Expose-Headers": {"X-A"}, "Access-Control-Max-Age": {"5"}, "Vary": {"Accept-Encoding, Cookie", "Origin"}}},
		{"Vary already names Origin", http.Header{"Access-Control-Allow-Origin": {"https://a.example"}, "Vary": {"Origin"}},
			http.Header{"Vary": {"Accept, origin"}},
			http.Header{"Access-Control-Allow-Origin": {"https://a.example"}, "Vary": {"Accept, origin"}}},
		{"Vary *", http.Header{"Access-Control-Allow-Origin": {"https://a.example"}, "Vary": {"Origin"}},
			http.Header{"Vary": {"*"}},
			http.Header{"Access-Control-Allow-Origin": {"https://a.example"}, "Vary": {"*"}}},
	} {
		dst := c.proxy.Clone()
		saved := takeCORS(dst)
		for k, v := range c.backend {
			dst[k] = v
		}
		saved.restore(dst)
		delete(dst, "Strict-Transport-Security")
		if len(dst) != len(c.want) {
			t.Errorf("%s: %v, want %v", c.name, dst, c.want)
			continue
		}
		for k, v := range c.want {
			if !slices.Equal(dst[k], v) {
				t.Errorf("%s: %s %q, want %q", c.name, k, dst[k], v)
			}
		}
	}
}
