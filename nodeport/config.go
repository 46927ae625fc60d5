package nodeport

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/spf13/pflag"
)

// Config is the nodeport component's configuration, set from flags.
type Config struct {
	// NodePortAddresses limits NodePorts to local addresses inside these CIDRs; empty means every
	// local address except loopback, as kube-proxy's --nodeport-addresses.
	NodePortAddresses []string
	// ClusterCIDRs are the pod ranges; traffic to a ClusterIP from outside them is masqueraded. Empty
	// means the union of the Nodes' spec.podCIDRs.
	ClusterCIDRs []string
	// MasqueradeAll masquerades all ClusterIP traffic, as kube-proxy's --masquerade-all.
	MasqueradeAll bool
	// MasqueradeBit is the fwmark bit that marks packets for SNAT.
	MasqueradeBit int
	// SyncPeriod is how often a full sync rewrites both tables whole, repairing anything changed
	// behind baregate's back; between them syncs are partial. Zero means an hour.
	SyncPeriod time.Duration
	// MinSyncPeriod bounds how often the rules are re-synced when Services change quickly.
	MinSyncPeriod time.Duration
	// HealthzTimeout is how long a change may wait unapplied before /healthz fails.
	HealthzTimeout time.Duration
	// HealthCheckBindAddress is where the healthCheckNodePort servers listen; empty means all addresses.
	HealthCheckBindAddress string
}

// AddFlags registers the component's flags on fs with their defaults.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringSliceVar(&c.NodePortAddresses, "nodeport-addresses", nil, "A list of CIDR ranges. NodePorts are served only on local addresses inside them (e.g. 192.0.2.0/24,2001:db8::/64). Empty means all local addresses except loopback.")
	fs.StringSliceVar(&c.ClusterCIDRs, "nodeport-cluster-cidr", nil, "The pod CIDR ranges of the cluster. Traffic to a ClusterIP from outside them is masqueraded. Empty means the union of the Nodes' spec.podCIDRs.")
	fs.BoolVar(&c.MasqueradeAll, "nodeport-masquerade-all", false, "SNAT all traffic sent via Service cluster IPs.")
	fs.IntVar(&c.MasqueradeBit, "nodeport-masquerade-bit", 14, "The bit of the fwmark space to mark packets requiring SNAT. Must be within [0, 31].")
	fs.DurationVar(&c.SyncPeriod, "nodeport-sync-period", time.Hour, "How often the Service rules are rewritten whole (a full sync), repairing changes made behind baregate's back. Between full syncs only what changed is programmed. 0 means 1h.")
	fs.DurationVar(&c.MinSyncPeriod, "nodeport-min-sync-period", time.Second, "The minimum period between rule re-syncs as Services and EndpointSlices change (e.g. '1s', '100ms'). A lone change is applied at once.")
	fs.DurationVar(&c.HealthzTimeout, "nodeport-healthz-timeout", time.Minute, "How long a Service change may wait without being programmed before /healthz reports the node unhealthy.")
	fs.StringVar(&c.HealthCheckBindAddress, "nodeport-healthcheck-bind-address", "", "The IP address the health check servers of externalTrafficPolicy=Local Services (healthCheckNodePort) listen on. Empty means all addresses.")
}

// Validate reports the first bad value.
func (c *Config) Validate() error {
	if c.MasqueradeBit < 0 || c.MasqueradeBit > 31 {
		return fmt.Errorf("--nodeport-masquerade-bit must be within [0, 31], got %d", c.MasqueradeBit)
	}
	if c.SyncPeriod < 0 {
		return fmt.Errorf("--nodeport-sync-period must not be negative, got %s", c.SyncPeriod)
	}
	if c.MinSyncPeriod < 0 {
		return fmt.Errorf("--nodeport-min-sync-period must not be negative, got %s", c.MinSyncPeriod)
	}
	if c.HealthzTimeout <= 0 {
		return fmt.Errorf("--nodeport-healthz-timeout must be positive, got %s", c.HealthzTimeout)
	}
	if _, err := parseCIDRs(c.NodePortAddresses); err != nil {
		return fmt.Errorf("--nodeport-addresses: %w", err)
	}
	if _, err := parseCIDRs(c.ClusterCIDRs); err != nil {
		return fmt.Errorf("--nodeport-cluster-cidr: %w", err)
	}
	if c.HealthCheckBindAddress != "" {
		if _, err := netip.ParseAddr(c.HealthCheckBindAddress); err != nil {
			return fmt.Errorf("--nodeport-healthcheck-bind-address: %w", err)
		}
	}
	return nil
}

func parseCIDRs(in []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	var errs []error
	for _, s := range in {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%q is not a CIDR: %w", s, err))
			continue
		}
		out = append(out, p.Masked())
	}
	return out, errors.Join(errs...)
}
