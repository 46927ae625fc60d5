package allocator

import (
	"fmt"
	"time"

	"github.com/spf13/pflag"
)

// Config tunes the allocation writer.
type Config struct {
	// MinSyncPeriod bounds how often allocations are written during a burst of changes.
	MinSyncPeriod time.Duration
}

// AddFlags adds the allocator's flags to fs.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.DurationVar(&c.MinSyncPeriod, "lbip-allocation-min-sync-period", time.Second,
		"The minimum period between writes of LoadBalancer IP allocations into Service and IPAddressPool status "+
			"(e.g. '500ms', '2s'). A lone change is written at once; a burst of changes is written at most once per period.")
}

// Validate checks c.
func (c *Config) Validate() error {
	if c.MinSyncPeriod < 0 || c.MinSyncPeriod > 5*time.Minute {
		return fmt.Errorf("--lbip-allocation-min-sync-period %v must be between 0 and 5m", c.MinSyncPeriod)
	}
	return nil
}
