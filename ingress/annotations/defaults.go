package annotations

import (
	"errors"
	"time"

	"github.com/spf13/pflag"
)

// AddFlags registers the settings ingress-nginx keeps in its ConfigMap.
func (d *Defaults) AddFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&d.HSTS.Enabled, "ingress-hsts", d.HSTS.Enabled, "Send Strict-Transport-Security on HTTPS responses of Ingress hosts (ingress-nginx ConfigMap key hsts).")
	fs.DurationVar(&d.HSTS.MaxAge, "ingress-hsts-max-age", d.HSTS.MaxAge, "The max-age of the Strict-Transport-Security header, whole seconds.")
	fs.BoolVar(&d.HSTS.IncludeSubdomains, "ingress-hsts-include-subdomains", d.HSTS.IncludeSubdomains, "Add includeSubDomains to the Strict-Transport-Security header.")
	fs.BoolVar(&d.HSTS.Preload, "ingress-hsts-preload", d.HSTS.Preload, "Add preload to the Strict-Transport-Security header.")
}

// Validate reports settings that make no sense.
func (d *Defaults) Validate() error {
	if d.HSTS.MaxAge < 0 || d.HSTS.MaxAge%time.Second != 0 {
		return errors.New("--ingress-hsts-max-age must be a non-negative whole number of seconds")
	}
	if d.HSTS.Preload && (d.HSTS.MaxAge < 365*24*time.Hour || !d.HSTS.IncludeSubdomains) {
		return errors.New("--ingress-hsts-preload needs --ingress-hsts-max-age of at least 8760h and --ingress-hsts-include-subdomains, as the preload list requires")
	}
	return nil
}
