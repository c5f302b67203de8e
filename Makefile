# Loom — the two commands a user needs: `make demo` and `make test`.
GO        ?= go
BIN       := bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X github.com/loomnet/loom/agent.Version=$(VERSION) \
             -X github.com/loomnet/loom/cniplugin.Version=$(VERSION) \
             -X main.Version=$(VERSION)
FUZZTIME  ?= 60s

# One set of build flags for every go command here (vet, build, test, run):
# static and path-trimmed, as released and as the integration rig builds.
# On a cold build cache each package then compiles once, not once for vet
# and the tests and again for the binaries (measured: 380 s -> 235 s).
export CGO_ENABLED := 0
export GOFLAGS := $(strip $(GOFLAGS) -trimpath)

.PHONY: all build deps demo test test-race unit integration fuzz lint image compose-image compose-demo bench bench-short clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/loomd ./cmd/loom ./cmd/loomctl ./cmd/loom-kube-policy

deps:
	@scripts/deps.sh

# A three-node fabric in network namespaces, two pods per node, every
# ordered pod pair pinged, a status table, then everything removed.
# IPV6=1: over an IPv6-only underlay.
demo: deps build
	$(GO) run ./integration/demo -bin $(BIN) $(if $(IPV6),-ipv6)

# Every test: unit tests, integration tests (root, network namespaces) and
# every fuzz target over its seed corpus (go test runs the seeds and
# testdata/fuzz). Exploring new inputs is `make fuzz`: a random search does
# not belong in a gate that must give the same answer on the same code.
# build first: the integration tests build the same binaries with the same
# flags, so on a cold build cache they find them compiled instead of
# spending their own timeout compiling.
test: deps lint build
	$(GO) test -count=1 -timeout 20m ./...

# Every test again under the race detector: the tests themselves and the
# binaries the integration rig runs (rig.RaceEnv), whose logs each test
# checks for race reports. Slower than make test and needs cgo, so it is
# not part of it.
test-race: deps
	@scripts/deps.sh gcc
	CGO_ENABLED=1 LOOM_RACE=1 $(GO) test -race -count=1 -timeout 45m ./...

unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /integration)

integration: deps build
	$(GO) test -count=1 -timeout 20m -v ./integration/...

fuzz:
	GO=$(GO) scripts/fuzz.sh $(FUZZTIME) \
		./gossip:FuzzDecodeNodeRecord ./cniplugin:FuzzParseConf \
		./agent:FuzzAPIRequest ./agent:FuzzConfigFile ./ipam:FuzzDecodeClaims \
		./policy:FuzzDecodePolicyFile ./policy:FuzzDirectoryMerge ./policy:FuzzIndexedMerge \
		./gossip:FuzzGossipMessage

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# The container image, built without pulling anything: static binaries from
# the host toolchain copied into an empty base.
IMAGE ?= loom:$(VERSION)
image: build
	docker build -t $(IMAGE) -f deploy/image/Dockerfile $(BIN)

# Benchmarks with their baselines in the same run (root; not part of test).
bench: deps
	@scripts/deps.sh perf
	$(GO) run ./bench/cmd/loombench -out bench
	$(GO) test -run '^$$' -bench . -benchmem ./agent ./gossip ./ipam ./overlay ./policy

bench-short: deps
	$(GO) run ./bench/cmd/loombench -short -out bench
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 20x ./agent ./gossip ./ipam ./overlay ./policy

# The compose rig's image: the binaries plus podctl, its stand-in runtime.
COMPOSE_IMAGE ?= loom-compose:dev
compose-image: build
	$(GO) build -o $(BIN)/podctl ./deploy/compose/podctl
	cp deploy/compose/Dockerfile $(BIN)/Dockerfile.compose
	docker build -q -t $(COMPOSE_IMAGE) -f $(BIN)/Dockerfile.compose $(BIN) >/dev/null

# Three loomd nodes as containers with docker-compose, two pods each, every
# pod pair pinged, torn down afterwards.
compose-demo: compose-image
	LOOM_IMAGE=$(COMPOSE_IMAGE) scripts/compose-demo.sh

clean:
	rm -rf $(BIN)
