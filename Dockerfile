# syntax=docker/dockerfile:1
# The baregate image: the static Go binary on a slim Debian with the two tools it runs at run time,
# nft (knftables programs nftables through it) and conntrack (stale UDP flows are deleted with it).
#
# Reproducible: the binary is built by hack/image-build.sh (-trimpath, no VCS stamp, no build ID), the
# Debian packages are pinned to exact versions, and SOURCE_DATE_EPOCH fixes file times with BuildKit
# (docker buildx build --build-arg SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) ...). The base images are
# named by tag here because no registry was reachable to read their digests; release builds pin them:
#   --build-arg GO_IMAGE=golang:1.26.8-bookworm@sha256:... --build-arg BASE_IMAGE=debian:bookworm-slim@sha256:...
ARG GO_IMAGE=golang:1.26.8-bookworm
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download && go mod verify
COPY . .
ARG VERSION=dev
RUN hack/image-build.sh /out/baregate "${VERSION}"

FROM ${BASE_IMAGE}
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE_DATE_EPOCH
RUN apt-get update \
 && apt-get install -y --no-install-recommends nftables=1.0.6-2+deb12u2 conntrack=1:1.4.7-1+b2 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log
COPY --from=build /out/baregate /usr/local/bin/baregate
LABEL org.opencontainers.image.title="baregate" \
      org.opencontainers.image.description="The edge of a bare-metal Kubernetes cluster: LoadBalancer IPs over ARP/NDP, nftables Service forwarding, Ingress proxy, dashboard" \
      org.opencontainers.image.source="https://github.com/baregate/baregate" \
      org.opencontainers.image.url="https://github.com/baregate/baregate" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# Non-root by default, so the image runs unprivileged jobs (the dashboard) as it is; the chart runs it as
# uid 0 with only NET_ADMIN and NET_RAW, since Kubernetes grants added capabilities to uid 0 only.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/baregate"]
