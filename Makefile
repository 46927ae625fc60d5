# baregate: `make demo` runs the lab with sample apps and the dashboard; `make test` runs the whole suite.
# Both install what they need on a fresh Debian machine (run as root).
SHELL := /bin/bash
GO ?= go
export GOFLAGS ?= -buildvcs=false
BIN := bin
# Debian packages the tests and the lab use (nftables and conntrack for forwarding, etcd for the
# control plane, chromium for the dashboard's browser test, ping and curl for the lab's tests and demo).
# LAB_PKGS run the lab (and the demo); the tests also need chromium (the dashboard's browser test) and
# file (the image test checks the binary is static).
LAB_PKGS := nftables conntrack iproute2 etcd-server iputils-ping curl
TEST_PKGS := $(LAB_PKGS) chromium file
BENCH_PKGS := wrk nginx-light haproxy openssl linux-perf
GO_TEST_FLAGS ?= -count=1 -timeout 60m
# Sizes of the nodeport benchmark against kube-proxy; 30k spends most of its time creating objects.
NODEPORT_BENCH_SIZES ?= 1000,10000,30000
# Tools built from the Go module proxy, cached per machine like the Kubernetes binaries.
TOOLS := $(HOME)/.cache/baregate/bin
HELM := $(TOOLS)/helm
# Pebble, the ACME test server; the version must match ingress/acme/pebbletest.Version.
PEBBLE_VERSION := v2.10.3
PEBBLE := $(HOME)/.cache/baregate/pebble-$(PEBBLE_VERSION)/pebble

.PHONY: all build test unit demo bench lint deps lab-deps bench-deps k8s crds clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# deps installs missing Debian packages and tools (once per machine).
deps: $(HELM) $(PEBBLE)
	@missing=""; for p in $(TEST_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi

$(HELM):
	GOBIN=$(TOOLS) $(GO) install helm.sh/helm/v3/cmd/helm@v3.22.0

$(PEBBLE):
	cd /tmp && GOFLAGS= GOBIN=$(dir $(PEBBLE)) $(GO) install github.com/letsencrypt/pebble/v2/cmd/pebble@$(PEBBLE_VERSION)

# lab-deps is what the demo needs: the lab's packages, without the test-only browser and helm.
lab-deps:
	@missing=""; for p in $(LAB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi

bench-deps:
	@missing=""; for p in $(BENCH_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi

# k8s builds kube-apiserver, kube-controller-manager and kube-proxy from the Go module proxy into
# ~/.cache/baregate (first time only).
k8s:
	@./hack/build-k8s.sh >/dev/null

# crds regenerates the chart's MetalLB CRDs with controller-gen (versions pinned by tools/crdgen/go.mod).
crds:
	./hack/gen-crds.sh

test: deps k8s
	$(GO) test $(GO_TEST_FLAGS) ./...

# unit runs only the tests that need neither root nor the control plane.
unit:
	$(GO) test -count=1 -short ./...

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

# demo builds what is missing and runs a 2-node lab with the sample app and the dashboard until Ctrl-C.
demo: lab-deps k8s
	./hack/demo.sh

# bench runs the side-by-side benchmarks recorded in BENCHMARKS.md (as root, on a quiet machine:
# they report ratios against nginx, HAProxy and kube-proxy from the same run).
bench: deps bench-deps k8s build
	./hack/bench-ingress.sh 10s 64
	./hack/bench-loop.sh 8s 64
	$(GO) test -run '^$$' -bench 'Propagation' -benchtime 100x ./ingress/
	BAREGATE_BENCH_SIZES=$(NODEPORT_BENCH_SIZES) $(GO) test -run '^$$' -bench 'VsKubeProxy' -benchtime 1x -timeout 180m ./nodeport/
	$(GO) test -run '^$$' -bench 'Build|OneChange|KernelSync' -benchmem ./nodeport/
	$(GO) test -run '^$$' -bench 'Failover' -benchtime 20x -timeout 30m ./lbip/
	$(GO) test -run '^$$' -bench . -benchmem ./lbip/allocator/ ./ingress/route/ ./ingress/annotations/ ./ui/

clean:
	rm -rf $(BIN)
