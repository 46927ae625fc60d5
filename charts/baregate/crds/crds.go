// Package crds embeds the CustomResourceDefinitions the chart installs (MetalLB's IPAddressPool,
// L2Advertisement and ServiceL2Status, from hack/gen-crds.sh), so the lab applies what a user's cluster gets.
package crds

import "embed"

// FS holds the CRD manifests (*.yaml) of this directory.
//
//go:embed *.yaml
var FS embed.FS
