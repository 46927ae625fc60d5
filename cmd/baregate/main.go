// Command baregate is the bare-metal Kubernetes edge gateway: it parses flags and runs gateway.Run.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/klog/v2"

	"github.com/baregate/baregate/gateway"
	"github.com/baregate/baregate/nodeport"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := newCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	cfg := gateway.NewConfig()
	cmd := &cobra.Command{
		Use:   "baregate",
		Short: "baregate gives a bare-metal Kubernetes cluster the edge a cloud gives it",
		Long: `baregate runs on every node (as a DaemonSet) and does four jobs:
  - lbip:     allocates LoadBalancer IPs from MetalLB IPAddressPools, writes them to Service
              status and announces each from one live node with ARP (IPv4) and NDP (IPv6);
  - nodeport: forwards ClusterIP, NodePort, ExternalIP and LoadBalancer traffic with nftables
              (a kube-proxy replacement);
  - ingress:  terminates HTTP and TLS for Ingresses of the baregate IngressClass and proxies
              straight to pod endpoints;
  - ui:       serves a live map of external IPs, hosts, Services, pods and nodes.
Each job can be switched off with its flag.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			klog.FromContext(ctx).Info("baregate", "version", version)
			return gateway.Run(ctx, cfg)
		},
		Version: version,
	}
	cfg.AddFlags(cmd.Flags())
	cmd.AddCommand(newCleanupCommand())
	addKlogFlags(cmd.PersistentFlags())
	cmd.SetContext(context.Background())
	return cmd
}

// addKlogFlags exposes klog's verbosity flags, as kube-proxy does.
func addKlogFlags(fs *pflag.FlagSet) {
	gfs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(gfs)
	for _, name := range []string{"v", "vmodule"} {
		fs.AddGoFlag(gfs.Lookup(name))
	}
}

func newCleanupCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "cleanup",
		Short: "Remove everything baregate programmed on this node (its nftables tables) and exit",
		Long: `cleanup removes the nftables tables baregate owns on this node, as kube-proxy --cleanup does.
A stopped gateway leaves its rules in place on purpose so traffic keeps flowing through restarts;
run this when removing baregate from a node for good.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return nodeport.Cleanup(cmd.Context())
		},
	}
}
