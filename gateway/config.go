package gateway

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/baregate/baregate/ingress"
	"github.com/baregate/baregate/lbip"
	"github.com/baregate/baregate/nodeport"
	"github.com/baregate/baregate/ui"
)

// Config is everything the gateway is told on its command line.
type Config struct {
	NodeName   string
	Namespace  string
	Kubeconfig string
	// AdminAddress serves /healthz, /readyz, /livez and /metrics.
	AdminAddress string
	APIQPS       float32
	APIBurst     int
	// SnapshotInterval is the least time between two snapshots (change storms are coalesced).
	SnapshotInterval time.Duration
	LeaderElection   LeaderElection

	EnableLBIP, EnableNodePort, EnableIngress, EnableUI bool

	LBIP     lbip.Config
	NodePort nodeport.Config
	Ingress  ingress.Config
	UI       ui.Config
}

// NewConfig returns the defaults, taking the node name and namespace from the environment the
// chart's DaemonSet sets (downward API), as kube-proxy and MetalLB's speaker do.
func NewConfig() *Config {
	ns := os.Getenv("POD_NAMESPACE")
	if ns == "" {
		ns = "baregate-system"
	}
	c := &Config{
		NodeName:         os.Getenv("NODE_NAME"),
		Namespace:        ns,
		AdminAddress:     "0.0.0.0:9710",
		APIQPS:           50,
		APIBurst:         100,
		SnapshotInterval: 0,
		LeaderElection: LeaderElection{
			Enabled:       true,
			LeaseName:     "baregate",
			LeaseDuration: 15 * time.Second,
			RenewDeadline: 10 * time.Second,
			RetryPeriod:   2 * time.Second,
		},
		EnableLBIP: true, EnableNodePort: true, EnableIngress: true, EnableUI: true,
		LBIP: lbip.DefaultConfig(),
		UI:   ui.DefaultConfig(),
	}
	// The flag definitions hold the components' defaults: registering them on a throwaway set
	// fills them in, so a Config built in code (tests, the lab) starts where the command line does.
	c.AddFlags(pflag.NewFlagSet("defaults", pflag.ContinueOnError))
	return c
}

// AddFlags registers the gateway's flags.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.NodeName, "node-name", c.NodeName, "Name of the Kubernetes Node this gateway runs on (default $NODE_NAME). Required.")
	fs.StringVar(&c.Namespace, "namespace", c.Namespace, "Namespace the gateway runs in, for its leader Lease and the Secrets it writes (default $POD_NAMESPACE or baregate-system).")
	fs.StringVar(&c.Kubeconfig, "kubeconfig", c.Kubeconfig, "Path to a kubeconfig file. Empty means the in-cluster service account.")
	fs.StringVar(&c.AdminAddress, "admin-address", c.AdminAddress, "The IP:port to serve /healthz, /readyz, /livez and /metrics on.")
	fs.Float32Var(&c.APIQPS, "kube-api-qps", c.APIQPS, "QPS to use while talking with the Kubernetes API server.")
	fs.IntVar(&c.APIBurst, "kube-api-burst", c.APIBurst, "Burst to use while talking with the Kubernetes API server.")
	fs.DurationVar(&c.SnapshotInterval, "snapshot-min-interval", c.SnapshotInterval, "The least time between two cluster snapshots; a storm of changes within it is handled as one. 0 takes each snapshot as soon as the previous one is done.")
	fs.BoolVar(&c.LeaderElection.Enabled, "leader-elect", c.LeaderElection.Enabled, "Elect one gateway with a Lease to write Service and Ingress status. Disable only when a single gateway runs.")
	fs.StringVar(&c.LeaderElection.LeaseName, "leader-elect-lease-name", c.LeaderElection.LeaseName, "Name of the leader election Lease, in --namespace.")
	fs.DurationVar(&c.LeaderElection.LeaseDuration, "leader-elect-lease-duration", c.LeaderElection.LeaseDuration, "How long non-leaders wait after the leader's last renewal before taking over.")
	fs.DurationVar(&c.LeaderElection.RenewDeadline, "leader-elect-renew-deadline", c.LeaderElection.RenewDeadline, "How long the leader retries renewing before it gives up leading.")
	fs.DurationVar(&c.LeaderElection.RetryPeriod, "leader-elect-retry-period", c.LeaderElection.RetryPeriod, "How long candidates wait between attempts to acquire or renew the Lease.")
	fs.BoolVar(&c.EnableLBIP, "lbip", c.EnableLBIP, "Allocate LoadBalancer IPs from MetalLB IPAddressPools and announce them with ARP/NDP.")
	fs.BoolVar(&c.EnableNodePort, "nodeport", c.EnableNodePort, "Forward ClusterIP, NodePort, ExternalIP and LoadBalancer traffic with nftables (replaces kube-proxy; disable to run beside it).")
	fs.BoolVar(&c.EnableIngress, "ingress", c.EnableIngress, "Serve Ingresses of the baregate IngressClass over HTTP and HTTPS.")
	fs.BoolVar(&c.EnableUI, "ui", c.EnableUI, "Serve the service-map dashboard.")
	c.LBIP.AddFlags(fs)
	c.NodePort.AddFlags(fs)
	c.Ingress.AddFlags(fs)
	c.UI.AddFlags(fs)
}

// Validate reports every bad value at once.
func (c *Config) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("--node-name is required (or set NODE_NAME)"))
	} else if msgs := validation.IsDNS1123Subdomain(c.NodeName); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("--node-name %q is not a valid node name: %v", c.NodeName, msgs))
	}
	if msgs := validation.IsDNS1123Label(c.Namespace); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("--namespace %q is not a valid namespace: %v", c.Namespace, msgs))
	}
	if _, _, err := net.SplitHostPort(c.AdminAddress); err != nil {
		errs = append(errs, fmt.Errorf("--admin-address %q: %w", c.AdminAddress, err))
	}
	if c.APIQPS <= 0 || c.APIBurst <= 0 {
		errs = append(errs, errors.New("--kube-api-qps and --kube-api-burst must be positive"))
	}
	if c.SnapshotInterval < 0 {
		errs = append(errs, errors.New("--snapshot-min-interval must not be negative"))
	}
	if le := c.LeaderElection; le.Enabled {
		if msgs := validation.IsDNS1123Subdomain(le.LeaseName); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("--leader-elect-lease-name %q: %v", le.LeaseName, msgs))
		}
		if le.RetryPeriod <= 0 || le.RenewDeadline <= le.RetryPeriod || le.LeaseDuration <= le.RenewDeadline {
			errs = append(errs, errors.New("leader election needs 0 < --leader-elect-retry-period < --leader-elect-renew-deadline < --leader-elect-lease-duration"))
		}
	}
	if !c.EnableLBIP && !c.EnableNodePort && !c.EnableIngress && !c.EnableUI {
		errs = append(errs, errors.New("every component is disabled (--lbip, --nodeport, --ingress, --ui): nothing to run"))
	}
	for _, comp := range []struct {
		on       bool
		validate func() error
	}{
		{c.EnableLBIP, c.LBIP.Validate},
		{c.EnableNodePort, c.NodePort.Validate},
		{c.EnableIngress, c.Ingress.Validate},
		{c.EnableUI, c.UI.Validate},
	} {
		if comp.on {
			if err := comp.validate(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
