#!/usr/bin/env bash
# Regenerates the MetalLB CRDs the chart ships (charts/baregate/crds) from the Go module proxy:
# controller-gen and MetalLB's api/v1beta1 types, both pinned by tools/crdgen/go.mod. controller-gen
# is built once per version into ~/.cache/baregate/bin. With a directory argument it writes there
# instead, which is how the chart's test checks that the checked-in files are exactly this output.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/charts/baregate/crds}"
# The kinds baregate reads or writes; MetalLB's BGP kinds are of no use to it.
crds=(ipaddresspools l2advertisements servicel2statuses)

mod="$root/tools/crdgen"
export GOWORK=off
version="$(cd "$mod" && go list -m -f '{{.Version}}' sigs.k8s.io/controller-tools)"
bin="${XDG_CACHE_HOME:-$HOME/.cache}/baregate/bin"
cg="$bin/controller-gen-$version"
if [[ ! -x "$cg" ]]; then
  echo "building controller-gen $version (first time only) ..." >&2
  mkdir -p "$bin"
  (cd "$mod" && go build -o "$cg.$$.tmp" sigs.k8s.io/controller-tools/cmd/controller-gen)
  mv "$cg.$$.tmp" "$cg"
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# crdVersions=v1 and no other option: MetalLB's own generate_manifest (tasks.py) uses the same, so the
# output differs from MetalLB's config/crd/bases only in the controller-gen version annotation.
(cd "$mod" && "$cg" crd:crdVersions=v1 paths=go.universe.tf/metallb/api/v1beta1 output:crd:dir="$tmp")
mkdir -p "$out"
for c in "${crds[@]}"; do
  cp "$tmp/metallb.io_$c.yaml" "$out/metallb.io_$c.yaml"
done
