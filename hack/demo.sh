#!/usr/bin/env bash
# make demo: builds what is missing (the Kubernetes binaries once, then baregate and baregate-lab) and
# runs the 2-node demo lab with the sample app until Ctrl-C, which removes the lab again.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
./hack/build-k8s.sh >/dev/null
echo "building baregate and baregate-lab ..." >&2
go build -o bin/ ./cmd/baregate ./cmd/baregate-lab
exec bin/baregate-lab demo "$@"
