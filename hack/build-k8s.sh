#!/usr/bin/env bash
# Builds the Kubernetes binaries the lab and the integration tests run (kube-apiserver,
# kube-controller-manager, kube-proxy) from the Go module proxy, pinned by tools/k8s/go.mod,
# into a cache that survives clean clones. Prints the bin directory.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
version="$(cd "$root/tools/k8s" && go list -m -f "{{.Version}}" k8s.io/kubernetes)"
bin="${BAREGATE_K8S_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/baregate/k8s-$version/bin}"
mkdir -p "$bin"
minor="$(echo "$version" | cut -d. -f2)"
ldflags="-s -w"
for kv in "gitVersion=$version" "gitMajor=1" "gitMinor=$minor" "gitTreeState=clean" \
          "gitCommit=0000000000000000000000000000000000000000" "buildDate=1970-01-01T00:00:00Z"; do
  ldflags="$ldflags -X k8s.io/component-base/version.$kv"
done
for cmd in kube-apiserver kube-controller-manager kube-proxy; do
  if [[ -x "$bin/$cmd" ]]; then continue; fi
  echo "building $cmd $version (first time only, a few minutes) ..." >&2
  (cd "$root/tools/k8s" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$bin/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd")
  mv "$bin/$cmd.tmp" "$bin/$cmd"
done
echo "$bin"
