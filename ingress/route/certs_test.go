package route

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	fx "github.com/baregate/baregate/ingress/internal/fixture"
	"github.com/baregate/baregate/ingress/selfsigned"
	"github.com/baregate/baregate/internal/cluster"
)

func TestCertificatesBySNI(t *testing.T) {
	mk := func(cn string, names ...string) *corev1.Secret {
		c, err := selfsigned.New(cn, names, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return fx.TLSSecret(cn, c.CertPEM, c.KeyPEM)
	}
	shop, wild, sans, other := mk("shop", "shop.example.com"), mk("wild", "*.example.com"), mk("sans", "a.example.org", "b.example.org"), mk("other", "shop.example.com")
	older := fx.Ingress("older", 10, fx.TLS("shop", "shop.example.com"), fx.TLS("wild", "*.example.com"), fx.TLS("sans"),
		fx.Rule("shop.example.com", fx.Path("Prefix", "/", fx.Backend("web", 80))),
		fx.Rule("plain.example.net", fx.Path("Prefix", "/", fx.Backend("web", 80))),
		fx.Rule("*.example.com", fx.Path("Prefix", "/", fx.Backend("web", 80))))
	younger := fx.Ingress("younger", 1, fx.TLS("other", "shop.example.com"))
	tbl, problems := Build(fx.Snapshot(cluster.Inputs{
		Ingresses: []*networkingv1.Ingress{older, younger},
		Services:  []*corev1.Service{fx.Service("web", 80)},
		Secrets:   []*corev1.Secret{shop, wild, sans, other},
	}))
	if len(problems) != 1 || problems[0].Ingress != younger || problems[0].Reason != "CertificateConflict" {
		t.Errorf("want one CertificateConflict on the younger Ingress, got %v", problems)
	}
	cn := func(name string) string {
		c := tbl.Certs.Lookup(name)
		if c == nil {
			return "default"
		}
		return c.Leaf.Subject.CommonName
	}
	for name, want := range map[string]string{
		"shop.example.com": "shop", "SHOP.example.com": "shop", "api.example.com": "wild",
		"a.b.example.com": "default", "example.com": "default", "b.example.org": "sans", "c.example.org": "default", "": "default",
	} {
		if got := cn(name); got != want {
			t.Errorf("SNI %q: certificate %s, want %s", name, got, want)
		}
	}
	for _, r := range tbl.Routes {
		if want := r.Host != "plain.example.net"; r.TLS != want {
			t.Errorf("route %s: TLS=%v, want %v", r.Host, r.TLS, want)
		}
	}
}

// TestCertificateCache: a Builder parses a Secret again only when its resourceVersion changes.
func TestCertificateCache(t *testing.T) {
	c1, _ := selfsigned.New("one", []string{"x.example.com"}, time.Hour)
	c2, _ := selfsigned.New("two", []string{"x.example.com"}, time.Hour)
	ing := fx.Ingress("i", 0, fx.TLS("s", "x.example.com"))
	snap := func(sec *corev1.Secret) *cluster.Snapshot {
		return fx.Snapshot(cluster.Inputs{Ingresses: []*networkingv1.Ingress{ing}, Secrets: []*corev1.Secret{sec}})
	}
	var b Builder
	s1 := fx.TLSSecret("s", c1.CertPEM, c1.KeyPEM)
	t1, _ := b.Build(snap(s1))
	t2, _ := b.Build(snap(s1))
	if t1.Certs.Lookup("x.example.com") != t2.Certs.Lookup("x.example.com") {
		t.Error("unchanged Secret parsed again")
	}
	s2 := fx.TLSSecret("s", c2.CertPEM, c2.KeyPEM)
	s2.ResourceVersion = "changed"
	t3, _ := b.Build(snap(s2))
	if got := t3.Certs.Lookup("x.example.com").Leaf.Subject.CommonName; got != "two" {
		t.Errorf("rotated Secret serves %s", got)
	}
}
