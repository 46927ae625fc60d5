package annotations

import (
	"net/http"
	"testing"

	"golang.org/x/crypto/bcrypt"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BenchmarkParse is the cost per Ingress per sync of a heavily annotated Ingress.
func BenchmarkParse(b *testing.B) {
	ing := ingress(map[string]string{"rewrite-target": "/$2", "enable-cors": "true", "cors-allow-origin": "https://a.example, https://*.b.example",
		"affinity": "cookie", "session-cookie-samesite": "Lax", "allowlist-source-range": "192.0.2.0/24, 2001:db8::/32",
		"proxy-body-size": "8m", "proxy-read-timeout": "120", "limit-rps": "10", "auth-url": "https://$host/oauth2/auth"}, "/something(/|$)(.*)")
	b.ReportAllocs()
	for b.Loop() {
		Parse(ing, nil)
	}
}

// BenchmarkBasicAuthCheck shows why the proxy must cache successful logins for bcrypt users.
func BenchmarkBasicAuthCheck(b *testing.B) {
	bc, _ := bcrypt.GenerateFromPassword([]byte("password"), bcrypt.DefaultCost)
	for _, c := range []struct{ name, hash string }{
		{"bcrypt10", string(bc)}, {"apr1", "$apr1$xxxxxxxx$dxHfLAsjHkDRmG83UXe8K0"}, {"sha", "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="},
	} {
		b.Run(c.name, func(b *testing.B) {
			sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "auth"}, Data: map[string][]byte{"auth": []byte("foo:" + c.hash)}}
			p, _ := Parse(ingress(map[string]string{"auth-type": "basic", "auth-secret": "auth"}, "/"), secrets(sec))
			h := basicHeader("foo", "password")
			for b.Loop() {
				if _, ok := p.BasicAuth.Check(h); !ok {
					b.Fatal("refused")
				}
			}
		})
	}
}

func BenchmarkDecisions(b *testing.B) {
	p, _ := Parse(ingress(map[string]string{"rewrite-target": "/$2", "canary": "true", "canary-by-header": "X-Canary", "canary-weight": "10",
		"enable-cors": "true"}, "/something(/|$)(.*)"), nil)
	h := http.Header{"Origin": {"https://a.example"}, "Cookie": {"a=b"}}
	randn := func(int) int { return 50 }
	b.ReportAllocs()
	for b.Loop() {
		p.Rewrite("/something/new/path", "/something(/|$)(.*)")
		p.Canary.Decide(h, randn)
		p.CORS.Headers("GET", h)
	}
}
