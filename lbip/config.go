package lbip

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/baregate/baregate/lbip/allocator"
	"github.com/spf13/pflag"
)

// Config configures LoadBalancer IPs on this node.
type Config struct {
	// MemberBindAddress and MemberPort are where the gossip listens (UDP and TCP).
	MemberBindAddress string
	MemberPort        int
	// MemberAdvertiseAddress is the address other gateways reach this one at; empty means the
	// node's InternalIP.
	MemberAdvertiseAddress string
	// MemberSecretFile holds the shared secret encrypting the gossip; empty means clear text.
	MemberSecretFile string
	// Interfaces limits announcing to these interfaces on every node (L2Advertisements narrow further).
	Interfaces []string
	// ProbeTimeout is how long to listen for another host answering for an IP before claiming it.
	ProbeTimeout time.Duration
	// Allocator configures the leader's allocation writer.
	Allocator allocator.Config
}

// DefaultConfig returns the defaults the flags show.
func DefaultConfig() Config {
	return Config{MemberBindAddress: "0.0.0.0", MemberPort: 7946, ProbeTimeout: 200 * time.Millisecond,
		Allocator: allocator.Config{MinSyncPeriod: time.Second}}
}

// AddFlags registers the flags, MetalLB speaker style.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.MemberBindAddress, "lbip-memberlist-bind-address", c.MemberBindAddress, "Address the gossip among gateways (memberlist) listens on, UDP and TCP.")
	fs.IntVar(&c.MemberPort, "lbip-memberlist-port", c.MemberPort, "Port of the gossip among gateways; the same on every node.")
	fs.StringVar(&c.MemberAdvertiseAddress, "lbip-memberlist-advertise-address", c.MemberAdvertiseAddress, "Address other gateways reach this one's gossip at. Empty means the node's InternalIP.")
	fs.StringVar(&c.MemberSecretFile, "lbip-memberlist-secret-file", c.MemberSecretFile, "File holding a shared secret (any length) that encrypts and authenticates the gossip. Empty means no encryption.")
	fs.StringSliceVar(&c.Interfaces, "lbip-interfaces", c.Interfaces, "Interfaces to answer ARP/NDP on for LoadBalancer IPs (comma-separated). Empty means the interfaces whose subnet holds the IP, else every interface with an address of its family; L2Advertisement interfaces narrow this further.")
	c.Allocator.AddFlags(fs)
	fs.DurationVar(&c.ProbeTimeout, "lbip-probe-timeout", c.ProbeTimeout, "How long to wait for another host answering for an IP (ARP probe / neighbor solicitation) before first announcing it.")
}

// Validate reports bad values.
func (c *Config) Validate() error {
	var errs []error
	if _, err := netip.ParseAddr(c.MemberBindAddress); err != nil {
		errs = append(errs, fmt.Errorf("--lbip-memberlist-bind-address %q is not an IP address", c.MemberBindAddress))
	}
	if c.MemberPort < 1 || c.MemberPort > 65535 {
		errs = append(errs, fmt.Errorf("--lbip-memberlist-port %d is not a port (1-65535)", c.MemberPort))
	}
	if c.MemberAdvertiseAddress != "" {
		if _, err := netip.ParseAddr(c.MemberAdvertiseAddress); err != nil {
			errs = append(errs, fmt.Errorf("--lbip-memberlist-advertise-address %q is not an IP address", c.MemberAdvertiseAddress))
		}
	}
	for _, i := range c.Interfaces {
		if i == "" || len(i) > 15 || strings.ContainsAny(i, "/ \t") {
			errs = append(errs, fmt.Errorf("--lbip-interfaces: %q is not an interface name", i))
		}
	}
	if c.ProbeTimeout <= 0 || c.ProbeTimeout > 5*time.Second {
		errs = append(errs, fmt.Errorf("--lbip-probe-timeout %v must be above 0 and at most 5s: it delays every first announcement", c.ProbeTimeout))
	}
	if err := c.Allocator.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
