package gateway

import (
	"github.com/baregate/baregate/internal/cluster"
)

// buildComponents constructs the components enabled on this node, in dependency order: the
// dashboard last, since it reads the others' live state.
func buildComponents(cfg *Config, deps cluster.Deps) ([]cluster.Component, error) {
	var comps []cluster.Component
	_ = deps
	_ = cfg
	return comps, nil
}
