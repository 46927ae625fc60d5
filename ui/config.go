package ui

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/spf13/pflag"
)

// Config is the dashboard's configuration.
type Config struct {
	// Address is the loopback host:port the dashboard listens on; empty disables that listener.
	Address string
	// UnauthenticatedAddress is an extra, non-loopback listener. Anyone who reaches it sees the map.
	UnauthenticatedAddress string
	// RefreshInterval is how often live state (IP owners, route counters) is re-read.
	RefreshInterval time.Duration
	// WarningsInterval is how often baregate's Events are listed from the API server.
	WarningsInterval time.Duration
	// EventSource is the component name baregate's Events carry.
	EventSource string
	// ErrorThreshold is the share of 5xx responses above which a route is coloured as failing.
	ErrorThreshold float64
}

// DefaultConfig returns the defaults the flags start from.
func DefaultConfig() Config {
	return Config{
		Address:          "127.0.0.1:9711",
		RefreshInterval:  2 * time.Second,
		WarningsInterval: 30 * time.Second,
		EventSource:      "baregate",
		ErrorThreshold:   0.05,
	}
}

// AddFlags registers the dashboard's flags, defaulting to c's current values.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Address, "ui-address", c.Address, "The loopback IP address and port for the dashboard to serve on (use kubectl port-forward to reach it). Only loopback addresses are accepted; set to empty to disable.")
	fs.StringVar(&c.UnauthenticatedAddress, "ui-unauthenticated-address", c.UnauthenticatedAddress, "An additional IP address and port for the dashboard to serve on, WITHOUT authentication: everyone who can reach it can read the service map. Empty (the default) disables it.")
	fs.DurationVar(&c.RefreshInterval, "ui-refresh-interval", c.RefreshInterval, "How often the dashboard re-reads live state (IP owners, nftables sync, route counters) and computes request rates.")
	fs.DurationVar(&c.WarningsInterval, "ui-warnings-interval", c.WarningsInterval, "How often the dashboard lists baregate's Events from the API server.")
	fs.StringVar(&c.EventSource, "ui-event-source", c.EventSource, "The source component of the Events the dashboard shows as baregate's warnings.")
	fs.Float64Var(&c.ErrorThreshold, "ui-error-threshold", c.ErrorThreshold, "The share of 5xx responses (0-1) above which the dashboard colours a route as failing.")
}

// Validate checks c and says which flag is wrong.
func (c *Config) Validate() error {
	var errs []error
	if c.Address == "" && c.UnauthenticatedAddress == "" {
		errs = append(errs, errors.New("--ui-address and --ui-unauthenticated-address are both empty: the dashboard has nowhere to listen"))
	}
	if c.Address != "" {
		if err := loopbackAddress(c.Address); err != nil {
			errs = append(errs, fmt.Errorf("--ui-address %q: %w (to serve without authentication on another address, use --ui-unauthenticated-address)", c.Address, err))
		}
	}
	if c.UnauthenticatedAddress != "" {
		if _, _, err := net.SplitHostPort(c.UnauthenticatedAddress); err != nil {
			errs = append(errs, fmt.Errorf("--ui-unauthenticated-address %q: %w", c.UnauthenticatedAddress, err))
		}
	}
	if c.RefreshInterval <= 0 {
		errs = append(errs, fmt.Errorf("--ui-refresh-interval %v: must be positive", c.RefreshInterval))
	}
	if c.WarningsInterval <= 0 {
		errs = append(errs, fmt.Errorf("--ui-warnings-interval %v: must be positive", c.WarningsInterval))
	}
	if c.EventSource == "" {
		errs = append(errs, errors.New("--ui-event-source: must not be empty"))
	}
	if !(c.ErrorThreshold >= 0 && c.ErrorThreshold <= 1) {
		errs = append(errs, fmt.Errorf("--ui-error-threshold %v: must be between 0 and 1", c.ErrorThreshold))
	}
	return errors.Join(errs...)
}

func loopbackAddress(hostport string) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("host %q is not an IP address", host)
	}
	if !ip.IsLoopback() {
		return fmt.Errorf("%s is not a loopback address", ip)
	}
	return nil
}
