package route

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	fx "github.com/baregate/baregate/ingress/internal/fixture"
	"github.com/baregate/baregate/internal/cluster"
)

func TestPassthrough(t *testing.T) {
	pass := func(ing *networkingv1.Ingress) {
		ing.Annotations = map[string]string{"nginx.ingress.kubernetes.io/ssl-passthrough": "true"}
	}
	ings := []*networkingv1.Ingress{
		fx.Ingress("secure", 3, pass,
			fx.Rule("pass.example.com", fx.Path("Prefix", "/api", fx.Backend("api", 443)), fx.Path("Prefix", "/", fx.Backend("secure", 443))),
			fx.Rule("*.wild.example.com", fx.Path("Prefix", "/", fx.Backend("wild", 443))),
			fx.Rule("first.example.com", fx.Path("Exact", "/x", fx.Backend("first", 443)), fx.Path("Prefix", "/y", fx.Backend("api", 443)))),
		fx.Ingress("plain", 2, fx.Rule("plain.example.com", fx.Path("Prefix", "/", fx.Backend("web", 80)))),
		fx.Ingress("off", 1, func(ing *networkingv1.Ingress) {
			ing.Annotations = map[string]string{"nginx.ingress.kubernetes.io/ssl-passthrough": "false"}
		}, fx.Rule("off.example.com", fx.Path("Prefix", "/", fx.Backend("web", 80)))),
	}
	var svcs []*corev1.Service
	for _, s := range []string{"api", "secure", "wild", "first"} {
		svcs = append(svcs, fx.Service(s, 443))
	}
	svcs = append(svcs, fx.Service("web", 80))
	tbl, _ := Build(fx.Snapshot(cluster.Inputs{Ingresses: ings, Services: svcs}))
	if !tbl.HasPassthrough() {
		t.Fatal("HasPassthrough = false")
	}
	for sni, want := range map[string]string{
		"pass.example.com": "secure", "PASS.example.com.": "secure", // the "/" path's backend
		"a.wild.example.com": "wild", "first.example.com": "first", // no "/": the first route
		"plain.example.com": "", "off.example.com": "", "unknown.example.com": "", "": "",
		"b.a.wild.example.com": "",
	} {
		got := ""
		if b := tbl.Passthrough(sni); b != nil {
			got = b.Service.Name
		}
		if got != want {
			t.Errorf("Passthrough(%q) = %q, want %q", sni, got, want)
		}
	}
	plainOnly, _ := Build(fx.Snapshot(cluster.Inputs{Ingresses: ings[1:], Services: svcs}))
	if plainOnly.HasPassthrough() || (*Table)(nil).HasPassthrough() || (*Table)(nil).Passthrough("x.example.com") != nil {
		t.Error("passthrough found in a table without it")
	}
}
