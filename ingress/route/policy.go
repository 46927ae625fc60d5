package route

import (
	"net/url"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/baregate/baregate/ingress/annotations"
)

// Policy holds the per-route options that annotations set (timeouts, redirects, rewrites, auth ...),
// parsed by package annotations and resolved against the snapshot. Routes of one Ingress share one
// Policy; the proxy reads it, the matcher only for regular-expression paths.
type Policy struct {
	// Annotations are the Ingress's annotations the policy was parsed from.
	Annotations map[string]string
	// Nginx is the parsed ingress-nginx policy; never nil for a built route.
	Nginx *annotations.Policy
	// Plain is set when nothing but the defaults apply (body size, redirect to HTTPS, HSTS), which
	// the proxy checks inline on its fast path.
	Plain bool
	// ConnectTimeout, ReadTimeout and SendTimeout are the proxy-*-timeout annotations that were set;
	// zero means the proxy's own flags apply.
	ConnectTimeout, ReadTimeout, SendTimeout time.Duration
	// DefaultBackend is the default-backend annotation resolved to a Service port (nil: none).
	DefaultBackend *Backend
	// AuthBackend is set when auth-url names a cluster Service (name.namespace.svc[.cluster.local]):
	// the proxy then sends the auth subrequest to its endpoints, as cluster DNS is not available to a
	// gateway on the host network.
	AuthBackend *Backend
	// HSTS is the Strict-Transport-Security value for HTTPS responses of TLS hosts (nil: none),
	// formatted once.
	HSTS []string
}

// SecretGetter returns the lookup the annotation parser uses for the snapshot's Secrets.
func (s *buildState) secretGetter() annotations.SecretGetter {
	return func(key types.NamespacedName) *corev1.Secret { return s.snap.Secrets[key] }
}

// policy parses the Policy of an Ingress. Bad values become Problems on that Ingress; each option
// has then already fallen back to its safe behaviour, and other Ingresses are unaffected.
func (s *buildState) policy(ing *networkingv1.Ingress) *Policy {
	if !hasOptions(ing) {
		// Most Ingresses set no option: they share one parse of the defaults, read-only.
		if s.plainPolicy == nil {
			np, _ := s.defaults().Parse(&networkingv1.Ingress{}, nil)
			s.plainPolicy = &Policy{Nginx: np}
			if v := np.HSTS.Header(); v != "" {
				s.plainPolicy.HSTS = []string{v}
			}
			s.plainPolicy.Plain = plain(s.plainPolicy)
		}
		if len(ing.Annotations) == 0 {
			return s.plainPolicy
		}
		p := *s.plainPolicy
		p.Annotations = ing.Annotations
		return &p
	}
	np, probs := s.defaults().Parse(ing, s.secretGetter())
	for _, pr := range probs {
		s.problem(ing, pr.Reason, "%s: %s", pr.Annotation, pr.Message)
	}
	p := &Policy{Annotations: ing.Annotations, Nginx: np}
	if isSet(ing, "proxy-connect-timeout") {
		p.ConnectTimeout = np.ConnectTimeout
	}
	if isSet(ing, "proxy-read-timeout") {
		p.ReadTimeout = np.ReadTimeout
	}
	if isSet(ing, "proxy-send-timeout") {
		p.SendTimeout = np.SendTimeout
	}
	if np.DefaultBackend != "" {
		p.DefaultBackend = s.annotationBackend(ing, np.DefaultBackend)
	}
	if np.ForwardAuth != nil {
		p.AuthBackend = s.authBackend(ing, np.ForwardAuth.URL)
	}
	if v := np.HSTS.Header(); v != "" {
		p.HSTS = []string{v}
	}
	p.Plain = plain(p)
	return p
}

func (s *buildState) defaults() annotations.Defaults {
	if s.b.Defaults != nil {
		return *s.b.Defaults
	}
	return annotations.DefaultDefaults()
}

// isSet reports whether an option was written in either spelling (valid or not): defaults of the
// annotations package must not override the proxy's own flags for Ingresses that never asked.
func isSet(ing *networkingv1.Ingress, name string) bool {
	_, a := ing.Annotations[annotations.NginxPrefix+name]
	_, b := ing.Annotations[annotations.BaregatePrefix+name]
	return a || b
}

// plain reports whether p asks for nothing per request beyond the defaults.
func plain(p *Policy) bool {
	n := p.Nginx
	return n.RewriteTarget == "" && !n.UseRegex && n.XForwardedPrefix == "" && n.UpstreamVhost == "" &&
		!n.ForceSSLRedirect && n.AppRoot == "" && n.Redirect == nil && n.BackendProtocol == "HTTP" &&
		p.ConnectTimeout == 0 && p.ReadTimeout == 0 && p.SendTimeout == 0 && !n.ProxyBuffering &&
		n.UpstreamHash == nil && n.AllowSourceRange == nil && n.DenySourceRange == nil && n.CORS == nil &&
		n.Affinity == nil && n.ForwardAuth == nil && n.BasicAuth == nil && n.RateLimit == nil &&
		n.CustomHTTPErrors == nil && n.DefaultBackend == "" && n.Denied == ""
}

// annotationBackend resolves default-backend ("name" or "name:port") in the Ingress's namespace.
// Without a port the Service's first port is used.
func (s *buildState) annotationBackend(ing *networkingv1.Ingress, v string) *Backend {
	name, port, hasPort := strings.Cut(v, ":")
	ib := networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: name}}
	switch n, err := strconv.Atoi(port); {
	case hasPort && err == nil:
		ib.Service.Port.Number = int32(n)
	case hasPort:
		ib.Service.Port.Name = port
	default:
		svc := s.service(types.NamespacedName{Namespace: ing.Namespace, Name: name})
		if svc == nil || len(svc.Spec.Ports) == 0 {
			s.problem(ing, "ServiceNotFound", "default-backend Service %s/%s does not exist or has no ports; the proxy's own error pages are used", ing.Namespace, name)
			return nil
		}
		ib.Service.Port.Number = svc.Spec.Ports[0].Port
	}
	return s.backend(ing, ib)
}

// authBackend resolves an auth-url whose host is a cluster Service name to that Service's port.
func (s *buildState) authBackend(ing *networkingv1.Ingress, raw string) *Backend {
	u, err := url.Parse(annotations.Expand(raw, annotations.Vars{Scheme: "http", Host: "h", RequestURI: "/"}))
	if err != nil {
		return nil
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	host = strings.TrimSuffix(host, ".cluster.local")
	rest, ok := strings.CutSuffix(host, ".svc")
	if !ok {
		return nil
	}
	name, ns, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(ns, ".") {
		return nil
	}
	port := 80
	if u.Scheme == "https" {
		port = 443
	}
	if p := u.Port(); p != "" {
		port, _ = strconv.Atoi(p)
	}
	key := types.NamespacedName{Namespace: ns, Name: name}
	if s.service(key) == nil {
		return nil // left to DNS, which may know better (say, a node-local resolver with cluster DNS)
	}
	be := &Backend{Service: key, Port: strconv.Itoa(port)}
	if shared := s.backends[be.Key()]; shared != nil {
		return shared
	}
	s.resolve(ing, be, networkingv1.ServiceBackendPort{Number: int32(port)})
	return s.sharedBackend(be)
}

// hasOptions reports whether an Ingress has any annotation of either option prefix.
func hasOptions(ing *networkingv1.Ingress) bool {
	for k := range ing.Annotations {
		if strings.HasPrefix(k, annotations.NginxPrefix) || strings.HasPrefix(k, annotations.BaregatePrefix) {
			return true
		}
	}
	return false
}
