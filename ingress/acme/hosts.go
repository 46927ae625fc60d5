package acme

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/baregate/baregate/internal/cluster"
)

// Annotation asks for ACME certificates for every host of an Ingress.
const Annotation = "baregate.io/acme"

// Host is one host name to keep an ACME certificate for.
type Host struct {
	Name string
	// Ingress is the oldest served Ingress asking for the host: Events about it go there.
	Ingress *networkingv1.Ingress
	// Secret is the kubernetes.io/tls Secret the certificate is written to: the spec.tls entry's
	// secretName when one lists the host, else "<host>-tls" (see DefaultSecretName).
	Secret types.NamespacedName
}

// Hosts lists the hosts that get ACME certificates, sorted as the snapshot's Ingresses (oldest
// first, the first Ingress naming a host owns it): every host of Ingresses annotated with Annotation,
// and when allTLS is set also the spec.tls hosts of other Ingresses whose Secret does not exist or is
// one baregate manages. Only names that can get a certificate by HTTP-01 or TLS-ALPN-01 are listed:
// no wildcards, no IP addresses, at least two labels. This list is the HostPolicy: no other name,
// whatever a client sends as SNI, is ever ordered.
func Hosts(snap *cluster.Snapshot, allTLS bool) []Host {
	var out []Host
	seen := map[string]bool{}
	add := func(ing *networkingv1.Ingress, host, secret string) {
		host = strings.TrimSuffix(strings.ToLower(host), ".")
		if seen[host] || !Eligible(host) {
			return
		}
		seen[host] = true
		if secret == "" {
			secret = DefaultSecretName(host)
		}
		out = append(out, Host{Name: host, Ingress: ing, Secret: types.NamespacedName{Namespace: ing.Namespace, Name: secret}})
	}
	for _, ing := range snap.Ingresses {
		if ing.Annotations[Annotation] == "true" {
			for _, t := range ing.Spec.TLS {
				for _, h := range t.Hosts {
					add(ing, h, t.SecretName)
				}
			}
			for _, r := range ing.Spec.Rules {
				add(ing, r.Host, "")
			}
			continue
		}
		if !allTLS {
			continue
		}
		for _, t := range ing.Spec.TLS {
			if t.SecretName != "" {
				s := snap.Secrets[types.NamespacedName{Namespace: ing.Namespace, Name: t.SecretName}]
				if s != nil && s.Labels[ManagedLabel] != "true" {
					continue // the user's own certificate
				}
			}
			for _, h := range t.Hosts {
				add(ing, h, t.SecretName)
			}
		}
	}
	return out
}

// Eligible reports whether an ACME CA can issue for host by HTTP-01 or TLS-ALPN-01: a lower-case DNS
// name with at least two labels, not a wildcard.
func Eligible(host string) bool {
	if host == "" || strings.HasPrefix(host, "*") || !strings.Contains(host, ".") {
		return false
	}
	return len(validation.IsDNS1123Subdomain(host)) == 0 && !isIPv4(host)
}

func isIPv4(host string) bool {
	return strings.Trim(host, "0123456789.") == ""
}

// DefaultSecretName is the kubernetes.io/tls Secret a host's certificate goes to when no spec.tls entry
// names one: "<host>-tls", or a hashed name when that would be too long.
func DefaultSecretName(host string) string {
	if name := host + "-tls"; len(name) <= validation.DNS1123SubdomainMaxLength {
		return name
	}
	sum := sha256.Sum256([]byte(host))
	return "acme-" + hex.EncodeToString(sum[:12]) + "-tls"
}

// HostSet is the HostPolicy's view of Hosts: names by lower-case host.
type HostSet map[string]Host

// NewHostSet indexes hosts by name.
func NewHostSet(hosts []Host) HostSet {
	s := make(HostSet, len(hosts))
	for _, h := range hosts {
		s[h.Name] = h
	}
	return s
}
