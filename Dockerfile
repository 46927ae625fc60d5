# The baregate image: the static Go binary on a slim Debian with the nft tool (knftables drives
# nftables through it) and conntrack.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/baregate ./cmd/baregate

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends nftables conntrack \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/baregate /usr/local/bin/baregate
ENTRYPOINT ["/usr/local/bin/baregate"]
