package annotations

import (
	"net/netip"
	"regexp"
	"time"
)

// Policy is everything the annotations of one Ingress ask of the proxy. The zero value of each
// optional group (nil pointer) means the feature is off. Fields marked "safe behaviour" say what
// happens when the annotation is present but invalid.
type Policy struct {
	// RewriteTarget replaces the request path (nginx rewrite ... break): $1..$9 are the capture groups
	// of the Ingress path read as a regular expression. Invalid: no rewrite.
	RewriteTarget string
	// UseRegex reads the Ingress's paths as case-insensitive RE2 expressions anchored at the start
	// (implied by RewriteTarget, as in ingress-nginx). A path that does not compile is a Problem and
	// matches nothing.
	UseRegex bool
	regexps  map[string]*regexp.Regexp // by path as written
	// XForwardedPrefix is sent upstream as X-Forwarded-Prefix, so that an app behind a rewrite can
	// build its links. Invalid: not sent.
	XForwardedPrefix string
	// UpstreamVhost replaces the Host header sent upstream. Invalid: the client's Host is kept.
	UpstreamVhost string

	// SSLRedirect sends plain-HTTP requests for hosts with TLS to HTTPS with 308 (default true).
	SSLRedirect bool
	// ForceSSLRedirect does so even for hosts without a certificate of this Ingress (default false).
	ForceSSLRedirect bool
	// AppRoot is where "/" redirects to with 302 (empty: none). Invalid: no redirect.
	AppRoot string
	// Redirect answers every request with a redirect instead of proxying (permanent-redirect or
	// temporal-redirect). Invalid: no redirect, the request is proxied.
	Redirect *Redirect
	// FromToWWWRedirect redirects www.host to host and back with 308, whichever is not a rule host.
	FromToWWWRedirect bool

	// BackendProtocol is HTTP (default), HTTPS, GRPC or GRPCS. Invalid: HTTP.
	BackendProtocol string
	// ProxyBodySize is the largest request body accepted, in bytes; larger gives 413. 0 is unlimited.
	// Default 1 MiB; invalid: the default.
	ProxyBodySize int64
	// Timeouts to connect to an endpoint, between two reads of the response and between two writes
	// of the request (nginx semantics). Invalid: the default (5s, 60s, 60s).
	ConnectTimeout, ReadTimeout, SendTimeout time.Duration
	// ProxyBuffering buffers whole responses before sending them on (default false: streaming).
	ProxyBuffering bool
	// UpstreamHash picks the endpoint by a consistent hash of a request key instead of balancing.
	// Invalid: normal balancing.
	UpstreamHash *UpstreamHash
	// SSLPassthrough routes TLS by SNI to the backend without terminating it; other HTTP options of
	// the Ingress then cannot apply.
	SSLPassthrough bool

	// AllowSourceRange, when not nil, lists the only client networks allowed; others get 403.
	// Invalid: every client is refused (fail closed), since the user meant to restrict access.
	AllowSourceRange []netip.Prefix
	// DenySourceRange lists client networks refused with 403. Invalid: every client is refused.
	DenySourceRange []netip.Prefix

	CORS     *CORS
	Affinity *Affinity
	Canary   *Canary
	// ForwardAuth asks an external service before each request (auth-url).
	ForwardAuth *ForwardAuth
	// BasicAuth checks the Authorization header against an htpasswd Secret.
	BasicAuth *BasicAuth
	// RateLimit limits requests and connections per client IP; excess gets 503. Invalid: no limit.
	RateLimit *RateLimit

	// CustomHTTPErrors are the backend status codes whose responses are replaced by the answer of
	// DefaultBackend (or the proxy's own error page). Invalid: none.
	CustomHTTPErrors []int
	// DefaultBackend is a Service of the Ingress's namespace (name, optionally name:port) that serves
	// CustomHTTPErrors and requests when the route's Service has no endpoints. Invalid: none.
	DefaultBackend string
	// ServerAliases are more host names served exactly as the Ingress's rule hosts. Invalid names are
	// dropped one by one.
	ServerAliases []string

	// HSTS is sent on HTTPS responses; it comes from Defaults, not from annotations, as in ingress-nginx.
	HSTS HSTS

	// Denied, when not empty, says why every request to the Ingress gets 503: an access-control
	// annotation (auth, source ranges) was present but could not be honoured, and serving the
	// backend unprotected would be worse than not serving it.
	Denied string
}

// Redirect is a fixed redirect answer.
type Redirect struct {
	// URL may contain $scheme, $host, $request_uri and $escaped_request_uri (see Expand).
	URL  string
	Code int
}

// Defaults are the settings ingress-nginx takes from its ConfigMap rather than from annotations.
type Defaults struct {
	HSTS HSTS
}

// DefaultDefaults are ingress-nginx's stock ConfigMap values.
func DefaultDefaults() Defaults {
	return Defaults{HSTS: HSTS{Enabled: true, MaxAge: 365 * 24 * time.Hour, IncludeSubdomains: true}}
}

// supported lists every option name Parse reads; other ingress-nginx annotations are reported.
var supported = setOf(
	"rewrite-target", "use-regex", "ssl-redirect", "force-ssl-redirect", "app-root", "permanent-redirect",
	"permanent-redirect-code", "temporal-redirect", "from-to-www-redirect", "backend-protocol",
	"proxy-body-size", "proxy-connect-timeout", "proxy-read-timeout", "proxy-send-timeout", "proxy-buffering",
	"upstream-hash-by", "ssl-passthrough", "whitelist-source-range", "allowlist-source-range",
	"denylist-source-range", "enable-cors", "cors-allow-origin", "cors-allow-methods", "cors-allow-headers",
	"cors-allow-credentials", "cors-max-age", "cors-expose-headers", "affinity", "affinity-mode",
	"session-cookie-name", "session-cookie-path", "session-cookie-expires", "session-cookie-max-age",
	"session-cookie-samesite", "session-cookie-secure", "session-cookie-conditional-samesite-none",
	"session-cookie-change-on-failure", "canary", "canary-by-header", "canary-by-header-value",
	"canary-by-header-pattern", "canary-by-cookie", "canary-weight", "canary-weight-total", "auth-url",
	"auth-signin", "auth-signin-redirect-param", "auth-response-headers", "auth-method", "auth-type",
	"auth-secret", "auth-secret-type", "auth-realm", "limit-rps", "limit-rpm", "limit-connections",
	"limit-burst-multiplier", "limit-whitelist", "limit-allowlist", "custom-http-errors", "default-backend",
	"server-alias", "x-forwarded-prefix", "upstream-vhost",
)

func setOf(names ...string) map[string]struct{} {
	m := make(map[string]struct{}, len(names))
	for _, n := range names {
		m[n] = struct{}{}
	}
	return m
}
