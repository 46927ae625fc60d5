package ui

import (
	"crypto/x509/pkix"
	"slices"
	"testing"
	"time"

	"github.com/baregate/baregate/internal/cluster"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
)

func hostRow(t *testing.T, m *Map, host string) HostRow {
	t.Helper()
	i := slices.IndexFunc(m.Hosts, func(r HostRow) bool { return r.Host == host })
	if i < 0 {
		t.Fatalf("no row for host %s in %+v", host, m.Hosts)
	}
	return m.Hosts[i]
}

// The Ingress hosts table says who issued each certificate and, with the ingress's ACME state, where
// each ACME host's order stands.
func TestHostsIssuerAndACMEState(t *testing.T) {
	renew := fixtureTime.Add(30 * 24 * time.Hour)
	attempt := fixtureTime.Add(-time.Minute)
	shop := "shop.example.com"
	for _, tc := range []struct {
		name       string
		annotate   bool
		acme       []cluster.ACMECertificate
		wantACME   string
		wantHealth Health
	}{
		{name: "no ACME", wantHealth: HealthOK},
		{name: "asked for, ACME state unknown", annotate: true, wantACME: "requested (baregate.io/acme)", wantHealth: HealthOK},
		{name: "asked for, not listed by the ingress", annotate: true, acme: []cluster.ACMECertificate{},
			wantACME: "requested (baregate.io/acme) but not ordered: wildcard, IP address or single label", wantHealth: HealthOK},
		{name: "issued", annotate: true, acme: []cluster.ACMECertificate{{Host: shop, State: cluster.ACMEIssued, RenewAt: renew}},
			wantACME: "issued, renews 2026-12-30", wantHealth: HealthOK},
		{name: "pending", annotate: true, acme: []cluster.ACMECertificate{{Host: shop, State: cluster.ACMEPending, LastAttempt: attempt}},
			wantACME: "pending: ordering since 2026-11-30T11:59:00Z", wantHealth: HealthPending},
		{name: "failed, old certificate still served", annotate: true,
			acme:     []cluster.ACMECertificate{{Host: "Shop.Example.com", State: cluster.ACMEFailed, LastError: "urn:ietf:params:acme:error:rateLimited", LastAttempt: attempt, NotAfter: renew}},
			wantACME: "failed: urn:ietf:params:acme:error:rateLimited (last attempt 2026-11-30T11:59:00Z); still serving a certificate valid until 2026-12-30", wantHealth: HealthNotReady},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := fixtureInputs(t, fixtureOpts{webReplicas: 2})
			for _, ing := range in.Ingresses {
				if ing.Name == "shop" && tc.annotate {
					ing.Annotations = map[string]string{ACMEAnnotation: "true"}
				}
			}
			for _, s := range in.Secrets {
				if s.Name == "shop-tls" {
					s.Data[corev1.TLSCertKey] = certPEM(t, shop, fixtureTime.Add(60*24*time.Hour), &pkix.Name{Organization: []string{"Let's Encrypt"}, CommonName: "R11"})
				}
			}
			m := BuildMap(cluster.NewSnapshot(1, fixtureTime, in), Live{ACME: tc.acme, ErrorThreshold: 0.05})
			row := hostRow(t, m, shop)
			if row.ACME != tc.wantACME || row.Issuer != "Let's Encrypt R11" || row.Cert != "valid until 2027-01-29" {
				t.Errorf("row %+v; want ACME %q, issuer Let's Encrypt R11", row, tc.wantACME)
			}
			n := nodesByID(m)["host:"+shop]
			if n.Health != tc.wantHealth || field(n, "Issuer") != "Let's Encrypt R11" || field(n, "ACME") != tc.wantACME {
				t.Errorf("host node: health %s, fields %+v; want health %s", n.Health, n.Fields, tc.wantHealth)
			}
		})
	}
}

// A default backend is a route like the others: the proxy's counters for it become request and
// error rates on its route and on the edge from the any-host node, and colour it when failing.
func TestDefaultBackendRates(t *testing.T) {
	in := fixtureInputs(t, fixtureOpts{webReplicas: 2})
	fallback := &networkingv1.Ingress{ObjectMeta: meta("shop", "fallback"), Spec: networkingv1.IngressSpec{
		IngressClassName: in.Ingresses[0].Spec.IngressClassName,
		DefaultBackend:   &networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "web", Port: networkingv1.ServiceBackendPort{Number: 80}}},
	}}
	in.Ingresses = append(in.Ingresses, fallback)
	snap := cluster.NewSnapshot(1, fixtureTime, in)
	key := types.NamespacedName{Namespace: "shop", Name: "fallback"}
	counters := func(requests, errors uint64) []cluster.Route {
		return []cluster.Route{{Ingress: key, Service: types.NamespacedName{Namespace: "shop", Name: "web"}, Port: "80", Endpoints: 2, Requests: requests, Errors: errors}}
	}
	tr := rateTracker{window: 2 * time.Second}
	tr.observe(fixtureTime, counters(100, 0))
	routes := counters(120, 4)
	rates := tr.observe(fixtureTime.Add(2*time.Second), routes)

	m := BuildMap(snap, Live{Routes: routes, Rates: rates, ErrorThreshold: 0.05})
	rid := routeID(key, "", "")
	n := nodesByID(m)[rid]
	if n.Label != "* (default backend)" || n.Health != HealthErrors || field(n, "Rate") != "10.0 req/s, 2.0 5xx/s" || field(n, "Requests since start") != "120" {
		t.Errorf("default backend route: %+v", n)
	}
	i := slices.IndexFunc(m.Edges, func(e Edge) bool { return e.From == "host:*" && e.To == rid })
	if i < 0 {
		t.Fatalf("no edge from the any-host node to the default backend: %+v", m.Edges)
	}
	if e := m.Edges[i]; e.RequestRate == nil || *e.RequestRate != 10 || *e.ErrorRate != 2 || !e.Failing {
		t.Errorf("edge to the default backend: %+v", e)
	}
	if n := nodesByID(m)["svc:shop/web"]; n.Health != HealthErrors {
		t.Errorf("the default backend's Service is not coloured by its errors: %+v", n)
	}
}
