package annotations

import (
	"testing"
)

func TestRedirectFor(t *testing.T) {
	httpV := Vars{Scheme: "http", Host: "shop.example.com", RequestURI: "/cart?id=1"}
	httpRoot := Vars{Scheme: "http", Host: "shop.example.com", RequestURI: "/"}
	httpsV := Vars{Scheme: "https", Host: "shop.example.com", RequestURI: "/cart?id=1"}
	for _, c := range []struct {
		name     string
		ann      map[string]string
		v        Vars
		path     string
		tls      bool
		wantLoc  string
		wantCode int
	}{
		{"defaults, TLS host, http", nil, httpV, "/cart", true, "https://shop.example.com/cart?id=1", 308},
		{"defaults, TLS host, https", nil, httpsV, "/cart", true, "", 0},
		{"defaults, no TLS", nil, httpV, "/cart", false, "", 0},
		{"ssl-redirect off", map[string]string{"ssl-redirect": "false"}, httpV, "/cart", true, "", 0},
		{"force without TLS", map[string]string{"force-ssl-redirect": "true"}, httpV, "/cart", false, "https://shop.example.com/cart?id=1", 308},
		{"app-root first", map[string]string{"app-root": "/app1"}, httpRoot, "/", true, "http://shop.example.com/app1", 302},
		{"app-root only for /", map[string]string{"app-root": "/app1"}, httpsV, "/cart", true, "", 0},
		{"permanent before https", map[string]string{"permanent-redirect": "https://www.example.com$request_uri"}, httpV, "/cart", true,
			"https://www.example.com/cart?id=1", 301},
		{"temporal", map[string]string{"temporal-redirect": "https://status.example.com/"}, httpsV, "/cart", true, "https://status.example.com/", 302},
		{"invalid redirect proxies", map[string]string{"permanent-redirect": "/relative"}, httpsV, "/cart", true, "", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, _ := Parse(ingress(c.ann, "/"), nil)
			loc, code := p.RedirectFor(c.v, c.path, c.tls)
			if loc != c.wantLoc || code != c.wantCode {
				t.Errorf("RedirectFor = %q %d, want %q %d", loc, code, c.wantLoc, c.wantCode)
			}
		})
	}
}
