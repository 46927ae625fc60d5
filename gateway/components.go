package gateway

import (
	"fmt"

	"k8s.io/client-go/dynamic"

	"github.com/baregate/baregate/ingress"
	"github.com/baregate/baregate/ingress/acme"
	"github.com/baregate/baregate/internal/cluster"
	"github.com/baregate/baregate/lbip"
	"github.com/baregate/baregate/nodeport"
	"github.com/baregate/baregate/ui"
)

// buildComponents constructs the components enabled on this node, in dependency order: the
// dashboard last, since it reads the others' live state through the status interfaces.
func buildComponents(cfg *Config, deps cluster.Deps, dyn dynamic.Interface) ([]cluster.Component, error) {
	var comps []cluster.Component
	var sources ui.Sources
	var lb *lbip.LB
	if cfg.EnableLBIP {
		var err error
		lb, err = lbip.New(cfg.LBIP, deps, dyn)
		if err != nil {
			return nil, fmt.Errorf("setting up lbip: %w", err)
		}
		comps = append(comps, lb)
		sources.Announcements = lb
	}
	if cfg.EnableNodePort {
		np, err := nodeport.New(cfg.NodePort, deps)
		if err != nil {
			return nil, fmt.Errorf("setting up nodeport: %w", err)
		}
		comps = append(comps, np)
		sources.Forwarding = np
		if lb != nil {
			// New LB IPs wait for this node's rules, so clients are not refused meanwhile.
			lb.SetForwarding(np)
		}
	}
	if cfg.EnableIngress {
		certs, err := acme.New(cfg.Ingress.ACME, deps)
		if err != nil {
			return nil, fmt.Errorf("setting up ingress ACME: %w", err)
		}
		icfg := cfg.Ingress
		icfg.Certificates = certs // ACME certificates and challenge answers in the listeners
		ing, err := ingress.New(icfg, deps)
		if err != nil {
			return nil, fmt.Errorf("setting up ingress: %w", err)
		}
		comps = append(comps, ing, certs)
		sources.Routes = ing
		sources.ACME = certs
	}
	if cfg.EnableUI {
		srv, err := ui.New(cfg.UI, deps, sources)
		if err != nil {
			return nil, fmt.Errorf("setting up ui: %w", err)
		}
		comps = append(comps, srv)
	}
	return comps, nil
}
