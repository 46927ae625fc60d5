package kubelet

import (
	"errors"
	"fmt"
	"net/netip"

	"k8s.io/client-go/kubernetes"

	"github.com/baregate/baregate/internal/lab/echo"
)

// Config describes one lab node.
type Config struct {
	NodeName string
	// Netns is the node's network namespace; it exists before Run.
	Netns string
	// PodBridge is the bridge inside Netns that pod veths attach to; it holds the gateway addresses.
	PodBridge string
	// PodCIDRs are the node's pod ranges (an IPv4 /24 and an IPv6 /64); their first address (.1, ::1)
	// is the bridge's.
	PodCIDRs []netip.Prefix
	// NodeIPs are the node's LAN addresses (its InternalIPs, and hostNetwork pods' IPs).
	NodeIPs []netip.Addr
	// Zone is the node's topology.kubernetes.io/zone label.
	Zone   string
	Labels map[string]string
	Client kubernetes.Interface
	// Self is the baregate-lab binary: containers run as `ip netns exec <ns> Self pod-run <program> args...`.
	Self string
	// StateDir holds pod logs and pid files.
	StateDir string
	// NetnsPrefix starts the name of every pod namespace of the lab, so Cleanup(NetnsPrefix) finds them
	// all; a pod's namespace is NetnsPrefix + NodeName + "-" + the start of the pod's UID.
	// Default DefaultNetnsPrefix.
	NetnsPrefix string
	// ProgramFor maps a container image and command line to a built-in program; default echo.ProgramFor.
	ProgramFor func(image string, args []string) (program string, progArgs []string, ok bool)
}

// DefaultNetnsPrefix starts pod namespace names when Config.NetnsPrefix is empty.
const DefaultNetnsPrefix = "bglab-pod-"

func (c *Config) setDefaults() {
	if c.NetnsPrefix == "" {
		c.NetnsPrefix = DefaultNetnsPrefix
	}
	if c.ProgramFor == nil {
		c.ProgramFor = echo.ProgramFor
	}
}

// Validate reports missing or inconsistent settings.
func (c *Config) Validate() error {
	var errs []error
	for name, v := range map[string]string{"NodeName": c.NodeName, "Netns": c.Netns, "PodBridge": c.PodBridge, "Self": c.Self, "StateDir": c.StateDir} {
		if v == "" {
			errs = append(errs, fmt.Errorf("%s is required", name))
		}
	}
	if c.Client == nil {
		errs = append(errs, errors.New("the API client is required"))
	}
	if len(c.PodCIDRs) == 0 || len(c.PodCIDRs) > 2 {
		errs = append(errs, fmt.Errorf("want one or two pod CIDRs (IPv4 and IPv6), got %d", len(c.PodCIDRs)))
	}
	families := map[bool]bool{}
	for _, p := range c.PodCIDRs {
		if families[p.Addr().Is4()] {
			errs = append(errs, fmt.Errorf("pod CIDRs %v: two of one family", c.PodCIDRs))
		}
		families[p.Addr().Is4()] = true
		if p.Masked() != p || p.Bits() > p.Addr().BitLen()-2 {
			errs = append(errs, fmt.Errorf("pod CIDR %v is not a network with room for pods", p))
		}
	}
	if len(c.NodeIPs) == 0 {
		errs = append(errs, errors.New("NodeIPs: at least one is required"))
	}
	return errors.Join(errs...)
}
