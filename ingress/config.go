package ingress

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/types"

	"github.com/baregate/baregate/ingress/acme"
	"github.com/baregate/baregate/ingress/proxy"
)

// Config is the ingress proxy's configuration.
type Config struct {
	// HTTPAddress and HTTPSAddress are the listen addresses; empty disables a listener.
	HTTPAddress, HTTPSAddress string
	// ProxyProtocol expects a PROXY protocol (v1 or v2) header on every connection of both listeners.
	ProxyProtocol bool
	// Service is the namespace/name of the LoadBalancer Service exposing the listeners; its address
	// is written into the status of served Ingresses.
	Service string
	Balance string
	// Timeouts for talking to backends, and how long an endpoint that refused is skipped.
	ConnectTimeout, ReadTimeout, SendTimeout, PassiveHealthTimeout time.Duration
	// ClientSendTimeout bounds each write to a client.
	ClientSendTimeout       time.Duration
	Retries                 int
	MaxIdleConnsPerEndpoint int
	TrustForwardedHeaders   bool
	AccessLog               bool
	ServerHeader            string
	// DisableFastPath serves every request with net/http's Server and sends it through net/http's
	// Transport (a safety valve).
	DisableFastPath bool
	// DisableEventLoop serves plain HTTP/1.x connections with a goroutine each instead of the event
	// loops (a safety valve, and the other side of their benchmark).
	DisableEventLoop bool
	// MinSyncInterval bounds how often the route table is rebuilt during a burst of changes.
	MinSyncInterval time.Duration
	// ACME configures certificates from an ACME CA (package acme).
	ACME acme.Config
	// Policy holds ingress-nginx's ConfigMap-level defaults (HSTS) and the upstream connection cap.
	Policy PolicyConfig
	// Certificates, when set (the gateway sets the acme.Manager), is asked first for every TLS
	// handshake's certificate and sees every plain-HTTP request before routing. Not a flag.
	Certificates CertificateSource
}

// CertificateSource takes part in the listeners for ACME: certificates and tls-alpn-01 answers on the
// TLS listener, http-01 answers on the HTTP listener.
type CertificateSource interface {
	// GetCertificate returns nil and no error for names it has nothing for.
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// HTTPHandler wraps the HTTP listener's handler.
	HTTPHandler(next http.Handler) http.Handler
}

// AddFlags registers the ingress flags on fs, with defaults.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.HTTPAddress, "ingress-http-address", ":80", "The address the ingress proxy serves HTTP on (ip:port, [ip]:port or :port); empty disables HTTP. HTTP/2 without TLS (h2c, for gRPC clients) is accepted too.")
	fs.StringVar(&c.HTTPSAddress, "ingress-https-address", ":443", "The address the ingress proxy serves HTTPS on; empty disables HTTPS. Certificates come from the kubernetes.io/tls Secrets named in spec.tls of the Ingresses, chosen by SNI; other names get a self-signed default certificate.")
	fs.BoolVar(&c.ProxyProtocol, "ingress-proxy-protocol", false, "Require a PROXY protocol (v1 or v2) header on every ingress connection, as sent by a balancer in front of baregate, and use the client address it carries.")
	fs.StringVar(&c.Service, "ingress-service", "baregate-system/baregate-ingress", "The namespace/name of the LoadBalancer Service that exposes the ingress proxy. Its status.loadBalancer is copied to the status of every Ingress baregate serves.")
	fs.StringVar(&c.Balance, "ingress-load-balance", proxy.RoundRobin, "How requests are spread over a backend's endpoints: '"+proxy.RoundRobin+"' or '"+proxy.LeastInFlight+"' (power of two choices by requests in flight).")
	fs.DurationVar(&c.ConnectTimeout, "ingress-connect-timeout", 5*time.Second, "The longest wait for a connection to a backend endpoint, like nginx's proxy_connect_timeout.")
	fs.DurationVar(&c.ReadTimeout, "ingress-read-timeout", 60*time.Second, "The longest wait for each read from a backend (response headers, then between body reads), like nginx's proxy_read_timeout.")
	fs.DurationVar(&c.SendTimeout, "ingress-send-timeout", 60*time.Second, "The longest wait for each write to a backend, like nginx's proxy_send_timeout.")
	fs.DurationVar(&c.ClientSendTimeout, "ingress-client-send-timeout", 60*time.Second, "The longest wait for each write to a client, like nginx's send_timeout: a client that stops reading a response is disconnected (over HTTP/2, its stream is reset).")
	fs.DurationVar(&c.PassiveHealthTimeout, "ingress-passive-health-timeout", 10*time.Second, "How long an endpoint that refused a connection is skipped for new requests (unless every endpoint is skipped).")
	fs.IntVar(&c.Retries, "ingress-retries", 2, "How many other endpoints a request is retried on after a connection failure (any request whose body was not sent yet) or a failure of an idempotent request.")
	fs.IntVar(&c.MaxIdleConnsPerEndpoint, "ingress-max-idle-conns-per-endpoint", 1024, "Keep-alive connections kept open to each backend endpoint.")
	fs.BoolVar(&c.TrustForwardedHeaders, "ingress-trust-forwarded-headers", false, "Keep the X-Forwarded-* headers clients send (when every client comes through another proxy that sets them) instead of replacing them.")
	fs.BoolVar(&c.AccessLog, "ingress-access-log", false, "Log every proxied request as a structured log line.")
	fs.StringVar(&c.ServerHeader, "ingress-server-header", "baregate", "The Server header of every ingress response.")
	fs.BoolVar(&c.DisableFastPath, "ingress-disable-fast-path", false, "Serve every request with Go's standard HTTP server and send it through Go's standard HTTP client instead of baregate's HTTP/1.1 fast paths (which read plain HTTP/1.x requests from clients and send them on pooled backend connections without extra goroutines).")
	fs.BoolVar(&c.DisableEventLoop, "ingress-disable-event-loop", false, "Serve each plain HTTP/1.x client connection with a goroutine of its own instead of baregate's event loops (one per CPU, which wait on many connections at once as nginx does).")
	fs.DurationVar(&c.MinSyncInterval, "ingress-min-sync-interval", 10*time.Millisecond, "The shortest time between two route table rebuilds; changes arriving meanwhile are applied together.")
	c.ACME.AddFlags(fs)
	c.Policy = DefaultPolicyConfig() // its flags take their defaults from the values they are bound to
	c.Policy.AddFlags(fs)
}

// Validate reports the first invalid value.
func (c *Config) Validate() error {
	var errs []error
	if c.HTTPAddress == "" && c.HTTPSAddress == "" {
		errs = append(errs, errors.New("--ingress-http-address and --ingress-https-address are both empty: the ingress would serve nothing"))
	}
	for flag, addr := range map[string]string{"--ingress-http-address": c.HTTPAddress, "--ingress-https-address": c.HTTPSAddress} {
		if addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", flag, addr, err))
		}
	}
	if _, err := c.serviceKey(); err != nil {
		errs = append(errs, err)
	}
	if c.Balance != proxy.RoundRobin && c.Balance != proxy.LeastInFlight {
		errs = append(errs, fmt.Errorf("--ingress-load-balance %q: want %s or %s", c.Balance, proxy.RoundRobin, proxy.LeastInFlight))
	}
	for flag, d := range map[string]time.Duration{"--ingress-connect-timeout": c.ConnectTimeout, "--ingress-read-timeout": c.ReadTimeout, "--ingress-send-timeout": c.SendTimeout, "--ingress-client-send-timeout": c.ClientSendTimeout, "--ingress-passive-health-timeout": c.PassiveHealthTimeout} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %s", flag, d))
		}
	}
	if c.Retries < 0 || c.Retries > 3 {
		errs = append(errs, fmt.Errorf("--ingress-retries must be 0 to 3, got %d", c.Retries))
	}
	if c.MaxIdleConnsPerEndpoint < 1 {
		errs = append(errs, fmt.Errorf("--ingress-max-idle-conns-per-endpoint must be at least 1, got %d", c.MaxIdleConnsPerEndpoint))
	}
	if c.MinSyncInterval < 0 {
		errs = append(errs, fmt.Errorf("--ingress-min-sync-interval must not be negative, got %s", c.MinSyncInterval))
	}
	if c.ACME != (acme.Config{}) { // set by AddFlags; a Config built in code may leave ACME out
		errs = append(errs, c.ACME.Validate())
	}
	errs = append(errs, c.Policy.Validate())
	return errors.Join(errs...)
}

func (c *Config) serviceKey() (types.NamespacedName, error) {
	ns, name, ok := strings.Cut(c.Service, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return types.NamespacedName{}, fmt.Errorf("--ingress-service %q: want namespace/name", c.Service)
	}
	return types.NamespacedName{Namespace: ns, Name: name}, nil
}
