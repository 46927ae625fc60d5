// Package crdgen only imports the MetalLB API package that hack/gen-crds.sh generates CRDs from, so that
// this module's go.mod pins its version next to controller-gen's.
package crdgen

import _ "go.universe.tf/metallb/api/v1beta1"
