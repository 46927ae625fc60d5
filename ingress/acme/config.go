package acme

import (
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"os"
	"time"

	"github.com/spf13/pflag"
)

// LetsEncrypt is Let's Encrypt's production ACME directory.
const LetsEncrypt = "https://acme-v02.api.letsencrypt.org/directory"

// Config is the ACME part of the ingress configuration.
type Config struct {
	// DirectoryURL is the ACME CA's directory (empty: ACME is off); Email the account's contact (optional).
	DirectoryURL, Email string
	// CAFile is a PEM bundle trusted for the directory's HTTPS besides the system roots (private CAs, Pebble).
	CAFile string
	// AllTLSHosts orders certificates for spec.tls hosts without a Secret even without the annotation.
	AllTLSHosts bool
	// HTTP01 allows the http-01 challenge after tls-alpn-01 (which is always tried first).
	HTTP01 bool
	// RenewBefore is how long before expiry a certificate is renewed (at most a third of its lifetime).
	RenewBefore time.Duration
	// RetryInterval is the wait after a failed order; it doubles with each failure up to an hour.
	RetryInterval time.Duration
	// Namespace holds the cache Secrets and the order Lease; empty means the gateway's namespace.
	Namespace string
}

// AddFlags registers the --ingress-acme-* flags.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.DirectoryURL, "ingress-acme-directory-url", "", "The ACME directory certificates are ordered from, for Ingresses annotated "+Annotation+": \"true\" (Let's Encrypt: "+LetsEncrypt+"). Ordering accepts the CA's terms of service. Empty disables ACME.")
	fs.StringVar(&c.Email, "ingress-acme-email", "", "The contact e-mail address of the ACME account (optional; the CA writes to it about expiring certificates).")
	fs.StringVar(&c.CAFile, "ingress-acme-ca-file", "", "A PEM file of CA certificates trusted for the ACME directory's HTTPS besides the system roots (for a private ACME CA).")
	fs.BoolVar(&c.AllTLSHosts, "ingress-acme-all-tls-hosts", false, "Also order certificates for the spec.tls hosts of Ingresses without the "+Annotation+" annotation whose Secret does not exist.")
	fs.BoolVar(&c.HTTP01, "ingress-acme-http01", true, "Answer the http-01 challenge on the HTTP listener when the tls-alpn-01 challenge (tried first, on the HTTPS listener) fails.")
	fs.DurationVar(&c.RenewBefore, "ingress-acme-renew-before", 30*24*time.Hour, "How long before expiry ACME certificates are renewed (at most a third of the certificate's lifetime).")
	fs.DurationVar(&c.RetryInterval, "ingress-acme-retry-interval", time.Minute, "The wait after a failed ACME order before the next; it doubles with each failure, up to an hour.")
	fs.StringVar(&c.Namespace, "ingress-acme-namespace", "", "The namespace of the Secrets that cache ACME state (account key, certificates, challenge answers) and of the Lease that serializes orders; empty means the gateway's own namespace.")
}

// Validate reports the first invalid value.
func (c *Config) Validate() error {
	var errs []error
	if u, err := url.Parse(c.DirectoryURL); c.DirectoryURL != "" && (err != nil || u.Scheme != "https" || u.Host == "") {
		errs = append(errs, fmt.Errorf("--ingress-acme-directory-url %q: want an https:// URL", c.DirectoryURL))
	}
	if c.Email != "" {
		if a, err := mail.ParseAddress(c.Email); err != nil || a.Address != c.Email {
			errs = append(errs, fmt.Errorf("--ingress-acme-email %q: not a plain e-mail address", c.Email))
		}
	}
	if c.CAFile != "" {
		if _, err := os.Stat(c.CAFile); err != nil {
			errs = append(errs, fmt.Errorf("--ingress-acme-ca-file: %w", err))
		}
	}
	if c.RenewBefore < 2*time.Hour {
		errs = append(errs, fmt.Errorf("--ingress-acme-renew-before must be at least 2h, got %s", c.RenewBefore))
	}
	if c.RetryInterval <= 0 {
		errs = append(errs, fmt.Errorf("--ingress-acme-retry-interval must be positive, got %s", c.RetryInterval))
	}
	return errors.Join(errs...)
}
