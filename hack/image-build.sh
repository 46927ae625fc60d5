#!/bin/sh
# Builds the baregate binary exactly as the image's build stage does (the Dockerfile runs this script),
# so CI can check the build without a container engine: static (CGO off: the runtime stage has no Go
# toolchain's libc expectations), reproducible (-trimpath, no VCS stamp, no build ID, fixed version).
#
#   hack/image-build.sh OUTPUT [VERSION]
set -eu
out=${1:?usage: hack/image-build.sh OUTPUT [VERSION]}
version=${2:-${VERSION:-dev}}
cd "$(dirname "$0")/.."
CGO_ENABLED=0 GOOS=linux GOFLAGS=-mod=readonly \
	go build -trimpath -buildvcs=false \
	-ldflags "-s -w -buildid= -X main.version=${version}" \
	-o "$out" ./cmd/baregate
