package ingress

import (
	"errors"
	"fmt"

	"github.com/spf13/pflag"

	"github.com/baregate/baregate/ingress/annotations"
)

// PolicyConfig holds the settings of the ingress-nginx compatibility that ingress-nginx keeps in its
// ConfigMap, and the proxy's bound on upstream connections. It is separate from Config so that the
// two can be registered (and merged) independently.
type PolicyConfig struct {
	// Defaults are ingress-nginx's ConfigMap-level settings (HSTS).
	Defaults annotations.Defaults
	// MaxConnsPerBackend bounds the upstream connections in use at once per Service port; 0 is none.
	MaxConnsPerBackend int
}

// DefaultPolicyConfig is ingress-nginx's stock settings and no connection bound.
func DefaultPolicyConfig() PolicyConfig {
	return PolicyConfig{Defaults: annotations.DefaultDefaults()}
}

// AddFlags registers the flags of c on fs.
func (c *PolicyConfig) AddFlags(fs *pflag.FlagSet) {
	c.Defaults.AddFlags(fs)
	fs.IntVar(&c.MaxConnsPerBackend, "ingress-max-conns-per-backend", c.MaxConnsPerBackend, "The most upstream connections in use at once to one backend (Service port), over all its endpoints, like nginx's max_conns; requests beyond it wait up to the connect timeout, then get 503. 0 means no bound.")
}

// Validate reports invalid values.
func (c *PolicyConfig) Validate() error {
	var errs []error
	if err := c.Defaults.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.MaxConnsPerBackend < 0 {
		errs = append(errs, fmt.Errorf("--ingress-max-conns-per-backend must not be negative, got %d", c.MaxConnsPerBackend))
	}
	return errors.Join(errs...)
}
