package ui

import (
	"bytes"
	"cmp"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/baregate/baregate/internal/cluster"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
)

// certWarnBefore is how long before expiry a certificate turns amber.
const certWarnBefore = 14 * 24 * time.Hour

// ACMEAnnotation is how an Ingress asks baregate for ACME certificates for its hosts.
const ACMEAnnotation = "baregate.io/acme"

type hostInfo struct {
	row        HostRow
	namespaces map[string]bool
	health     Health
}

// addIngresses adds Ingress hosts and their routes to the Services, and returns the hosts table.
func addIngresses(g *graph, snap *cluster.Snapshot, live Live, svcHealth map[types.NamespacedName]Health, namespaces map[string]bool) []HostRow {
	table := map[RouteKey]cluster.Route{}
	for _, r := range live.Routes {
		table[routeKeyOf(r)] = r
	}
	acme := map[string]cluster.ACMECertificate{}
	for _, c := range live.ACME {
		acme[strings.ToLower(c.Host)] = c
	}
	hosts := map[string]*hostInfo{}
	for _, ing := range snap.Ingresses {
		namespaces[ing.Namespace] = true
		ingKey := types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}
		addRoute := func(host, path, pathType string, backend *networkingv1.IngressBackend) {
			h := hostEntry(hosts, snap, ing, host, live.ACME != nil)
			h.row.Routes++
			rk := RouteKey{Ingress: ingKey, Host: host, Path: path}
			hid, rid := "host:"+cmp.Or(host, "*"), routeID(ingKey, host, path)
			health := routeNode(g, snap, live, ing, rk, pathType, backend, table, svcHealth)
			h.health = worse(h.health, onlyErrors(health))
			e := g.edge(hid, rid, cmp.Or(path, "(default)"))
			if r, ok := live.Rates[rk]; ok {
				e.RequestRate, e.ErrorRate = &r.Requests, &r.Errors
				e.Failing = health == HealthErrors
			}
		}
		if ing.Spec.DefaultBackend != nil {
			addRoute("", "", "", ing.Spec.DefaultBackend)
		}
		for _, rule := range ing.Spec.Rules {
			if rule.HTTP == nil {
				continue
			}
			for _, p := range rule.HTTP.Paths {
				pt := ""
				if p.PathType != nil {
					pt = string(*p.PathType)
				}
				// Lower-cased, as the ingress route table keys hosts, so that live counters match.
				addRoute(strings.ToLower(rule.Host), p.Path, pt, &p.Backend)
			}
		}
	}
	var rows []HostRow
	for host, h := range hosts {
		ns := ""
		if len(h.namespaces) == 1 {
			for k := range h.namespaces {
				ns = k
			}
		}
		slices.Sort(h.row.Ingresses)
		n := g.node(Node{ID: "host:" + cmp.Or(host, "*"), Kind: KindHost, Label: h.row.Host, Namespace: ns})
		n.Health = h.health
		n.Sub = "HTTP"
		if h.row.TLS {
			n.Sub = "HTTPS · " + h.row.Cert
		}
		n.Fields = []Field{{"Ingresses", strings.Join(h.row.Ingresses, ", ")}, {"Routes", fmt.Sprint(h.row.Routes)}, {"TLS", fmt.Sprint(h.row.TLS)}}
		if c, ok := acme[host]; ok {
			var health Health
			h.row.ACME, health = acmeState(c)
			h.health = worse(h.health, health)
			n.Health = worse(n.Health, health)
		}
		if h.row.TLS {
			n.Fields = append(n.Fields, Field{"Secret", h.row.Secret}, Field{"Certificate", h.row.Cert})
			if h.row.Issuer != "" {
				n.Fields = append(n.Fields, Field{"Issuer", h.row.Issuer})
			}
		}
		if h.row.ACME != "" {
			n.Fields = append(n.Fields, Field{"ACME", h.row.ACME})
		}
		rows = append(rows, h.row)
	}
	slices.SortFunc(rows, func(a, b HostRow) int { return strings.Compare(a.Host, b.Host) })
	return rows
}

// onlyErrors keeps a route's error state for its host: the host's own colour is about its certificate.
func onlyErrors(h Health) Health {
	if h == HealthErrors {
		return h
	}
	return HealthOK
}

// hostEntry adds the Ingress to the host's row. acmeKnown says whether the ingress's ACME state is
// available; without it an ACME request can only be reported as asked for.
func hostEntry(hosts map[string]*hostInfo, snap *cluster.Snapshot, ing *networkingv1.Ingress, host string, acmeKnown bool) *hostInfo {
	h := hosts[host]
	if h == nil {
		h = &hostInfo{row: HostRow{Host: cmp.Or(host, "*"), Cert: "none"}, namespaces: map[string]bool{}, health: HealthOK}
		hosts[host] = h
	}
	h.namespaces[ing.Namespace] = true
	key := ing.Namespace + "/" + ing.Name
	if !slices.Contains(h.row.Ingresses, key) {
		h.row.Ingresses = append(h.row.Ingresses, key)
	}
	if ing.Annotations[ACMEAnnotation] == "true" && h.row.ACME == "" {
		h.row.ACME = "requested (" + ACMEAnnotation + ")"
		if acmeKnown {
			// Overwritten by the ACME state when the ingress lists the host.
			h.row.ACME += " but not ordered: wildcard, IP address or single label"
		}
	}
	if h.row.TLS {
		return h
	}
	for _, tls := range ing.Spec.TLS {
		if !slices.ContainsFunc(tls.Hosts, func(h string) bool { return strings.EqualFold(h, host) }) {
			continue
		}
		h.row.TLS = true
		if tls.SecretName == "" {
			h.row.Cert = "default certificate"
			return h
		}
		h.row.Secret = ing.Namespace + "/" + tls.SecretName
		sec := snap.Secrets[types.NamespacedName{Namespace: ing.Namespace, Name: tls.SecretName}]
		var cert string
		var health Health
		h.row.NotAfter, h.row.Issuer, cert, health = certState(sec, host, snap.Taken)
		h.row.Cert, h.health = cert, worse(h.health, health)
		return h
	}
	return h
}

// certState reads the certificate of a TLS Secret: its expiry, who issued it, and whether it
// serves host.
func certState(sec *corev1.Secret, host string, now time.Time) (notAfter *time.Time, issuer, state string, health Health) {
	if sec == nil {
		return nil, "", "secret missing", HealthDown
	}
	block, _ := pem.Decode(sec.Data[corev1.TLSCertKey])
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, "", "no PEM certificate in " + corev1.TLSCertKey, HealthDown
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, "", "unparseable certificate", HealthDown
	}
	na := cert.NotAfter.UTC()
	issuer = issuerName(cert)
	switch {
	case host != "" && cert.VerifyHostname(host) != nil:
		return &na, issuer, "not valid for this host", HealthDown
	case now.After(na):
		return &na, issuer, "expired " + na.Format(time.DateOnly), HealthDown
	case na.Sub(now) < certWarnBefore:
		return &na, issuer, fmt.Sprintf("expires in %d days", int(na.Sub(now).Hours()/24)), HealthNotReady
	}
	return &na, issuer, "valid until " + na.Format(time.DateOnly), HealthOK
}

// issuerName names a certificate's issuer as an operator knows it: its organisation and common
// name (Let's Encrypt's "R11"), or "self-signed".
func issuerName(cert *x509.Certificate) string {
	if bytes.Equal(cert.RawIssuer, cert.RawSubject) {
		return "self-signed"
	}
	var parts []string
	if len(cert.Issuer.Organization) > 0 {
		parts = append(parts, cert.Issuer.Organization[0])
	}
	if cn := cert.Issuer.CommonName; cn != "" && !slices.Contains(parts, cn) {
		parts = append(parts, cn)
	}
	if len(parts) == 0 {
		return cert.Issuer.String()
	}
	return strings.Join(parts, " ")
}

// acmeState says where a host's ACME certificate stands, and colours a failed order.
func acmeState(c cluster.ACMECertificate) (string, Health) {
	switch c.State {
	case cluster.ACMEIssued:
		return "issued, renews " + c.RenewAt.UTC().Format(time.DateOnly), HealthOK
	case cluster.ACMEFailed:
		s := "failed: " + c.LastError
		if !c.LastAttempt.IsZero() {
			s += " (last attempt " + c.LastAttempt.UTC().Format(time.RFC3339) + ")"
		}
		if !c.NotAfter.IsZero() {
			s += "; still serving a certificate valid until " + c.NotAfter.UTC().Format(time.DateOnly)
		}
		return s, HealthNotReady
	}
	s := "pending: ordering"
	if !c.LastAttempt.IsZero() {
		s += " since " + c.LastAttempt.UTC().Format(time.RFC3339)
	}
	return s, HealthPending
}

// routeNode adds one Ingress route and its edge to the Service, and returns the route's health.
func routeNode(g *graph, snap *cluster.Snapshot, live Live, ing *networkingv1.Ingress, rk RouteKey, pathType string,
	backend *networkingv1.IngressBackend, table map[RouteKey]cluster.Route, svcHealth map[types.NamespacedName]Health) Health {
	rid := routeID(rk.Ingress, rk.Host, rk.Path)
	label := cmp.Or(rk.Host, "*") + cmp.Or(rk.Path, " (default backend)")
	n := g.node(Node{ID: rid, Kind: KindRoute, Label: label, Namespace: ing.Namespace,
		Object: &ObjectRef{Kind: "Ingress", Namespace: ing.Namespace, Name: ing.Name}})
	n.Fields = []Field{{"Ingress", rk.Ingress.String()}, {"Host", cmp.Or(rk.Host, "* (any)")}, {"Path", cmp.Or(rk.Path, "(default backend)")}}
	if pathType != "" {
		n.Fields = append(n.Fields, Field{"Path type", pathType})
	}
	svcKey, port, isService := ingressBackendService(ing.Namespace, backend)
	switch {
	case !isService:
		n.Health, n.Sub = HealthExternal, "resource backend (not proxied)"
		n.Fields = append(n.Fields, Field{"Backend", "resource, which baregate does not proxy"})
		return n.Health
	case snap.Service(svcKey) == nil:
		n.Health, n.Sub = HealthDown, "Service "+svcKey.Name+" not found"
		n.Fields = append(n.Fields, Field{"Backend", svcKey.String() + ":" + port + " (missing)"})
		return n.Health
	}
	n.Sub = cmp.Or(pathType, "default") + " → " + svcKey.Name + ":" + port
	n.Fields = append(n.Fields, Field{"Backend", svcKey.String() + ":" + port})
	n.Health = svcHealth[svcKey]
	e := g.edge(rid, serviceID(svcKey), "port "+port)
	if r, ok := table[rk]; ok {
		n.Fields = append(n.Fields, Field{"Ready endpoints (route table)", fmt.Sprint(r.Endpoints)},
			Field{"Requests since start", fmt.Sprint(r.Requests)}, Field{"5xx since start", fmt.Sprint(r.Errors)})
	} else if live.Routes != nil {
		n.Fields = append(n.Fields, Field{"Route table", "not in force on this gateway (see the Ingress's warnings)"})
	}
	if r, ok := live.Rates[rk]; ok {
		e.RequestRate, e.ErrorRate = &r.Requests, &r.Errors
		n.Fields = append(n.Fields, Field{"Rate", fmt.Sprintf("%.1f req/s, %.1f 5xx/s", r.Requests, r.Errors)})
		if r.Requests > 0 && r.Errors/r.Requests > live.ErrorThreshold {
			e.Failing = true
			n.Health = HealthErrors
			if s := g.nodes[serviceID(svcKey)]; s != nil {
				s.Health = worse(s.Health, HealthErrors)
			}
		}
	}
	return n.Health
}
