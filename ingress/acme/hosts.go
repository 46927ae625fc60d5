package acme

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"

	"k8s.io/klog/v2"

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
		host = normalHost(host)
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
func Eligible(host string) bool { return host != "" && Ineligible(host) == "" }

// Ineligible says why no certificate can ever be ordered for host by HTTP-01 or TLS-ALPN-01, or ""
// when one can (or host is empty: a rule without a host names nothing to order).
func Ineligible(host string) string {
	switch {
	case host == "":
		return ""
	case strings.HasPrefix(host, "*"):
		return "a wildcard name needs the DNS-01 challenge, which baregate does not answer"
	case isIP(host):
		return "an IP address: ACME CAs issue for DNS names only"
	case !strings.Contains(host, "."):
		return "a single-label name: no public CA issues for it"
	case len(validation.IsDNS1123Subdomain(host)) != 0:
		return "not a valid lower-case DNS name"
	}
	return ""
}

// isIP spots IP addresses (IPv6 with or without brackets) and all-numeric dotted names, which no CA
// treats as DNS names.
func isIP(host string) bool {
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return true
	}
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

func normalHost(host string) string { return strings.TrimSuffix(strings.ToLower(host), ".") }

// SkippedHost is a host of an Ingress annotated with Annotation that can never get a certificate.
type SkippedHost struct {
	Name    string
	Ingress *networkingv1.Ingress
	Why     string
}

// Skipped lists the hosts of Ingresses annotated with Annotation that Hosts leaves out because no
// certificate can be ordered for them, once per Ingress and host. The hosts of spec.tls that only
// the all-TLS-hosts option would cover are not listed: nobody asked for those explicitly.
func Skipped(snap *cluster.Snapshot) []SkippedHost {
	var out []SkippedHost
	seen := map[skipKey]bool{}
	add := func(ing *networkingv1.Ingress, host string) {
		host = normalHost(host)
		why := Ineligible(host)
		k := skipKey{ing.UID, ing.Namespace, ing.Name, host}
		if why == "" || seen[k] {
			return
		}
		seen[k] = true
		out = append(out, SkippedHost{Name: host, Ingress: ing, Why: why})
	}
	for _, ing := range snap.Ingresses {
		if ing.Annotations[Annotation] != "true" {
			continue
		}
		for _, t := range ing.Spec.TLS {
			for _, h := range t.Hosts {
				add(ing, h)
			}
		}
		for _, r := range ing.Spec.Rules {
			add(ing, r.Host)
		}
	}
	return out
}

type skipKey struct {
	uid             types.UID
	namespace, name string
	host            string
}

// ReasonHostSkipped is the reason of the Warning Event about a host that gets no certificate.
const ReasonHostSkipped = "ACMEHostSkipped"

// newlySkipped returns the skipped hosts not reported before, and the set reported from now on: a
// host that goes away and comes back is reported again, one that stays is not.
func newlySkipped(reported map[skipKey]bool, skipped []SkippedHost) ([]SkippedHost, map[skipKey]bool) {
	var out []SkippedHost
	now := make(map[skipKey]bool, len(skipped))
	for _, s := range skipped {
		k := skipKey{s.Ingress.UID, s.Ingress.Namespace, s.Ingress.Name, s.Name}
		now[k] = true
		if !reported[k] {
			out = append(out, s)
		}
	}
	return out, now
}

// RunLeader implements cluster.Leader: while this gateway leads, it turns the hosts that can never get
// a certificate into Warning Events on their Ingresses, once per change and once per cluster (not once
// per replica and sync).
func (m *Manager) RunLeader(ctx context.Context) error {
	if m.cfg.DirectoryURL == "" {
		return nil
	}
	logger := klog.FromContext(ctx).WithName("ingress-acme")
	reported := map[skipKey]bool{}
	r := cluster.NewRunner("ingress-acme-skipped", 100*time.Millisecond, time.Second, 30*time.Second, func(context.Context) error {
		var fresh []SkippedHost
		fresh, reported = newlySkipped(reported, *m.skipped.Load())
		for _, s := range fresh {
			m.event(s.Ingress, corev1.EventTypeWarning, ReasonHostSkipped, "No ACME certificate for host %q: %s", s.Name, s.Why)
			logger.Info("ACME host skipped", "ingress", klog.KObj(s.Ingress), "host", s.Name, "why", s.Why)
		}
		return nil
	})
	m.skipRunner.Store(r)
	defer m.skipRunner.Store(nil)
	r.Run(ctx)
	return nil
}
