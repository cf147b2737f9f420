# godwit's build, test and demo entry points. `make test` is what CI runs.
SHELL := /bin/bash
export PATH := $(CURDIR)/.tools/bin:/usr/local/go/bin:$(PATH)

GO ?= go
BIN := bin/godwit
GO_TEST_FLAGS ?= -count=1 -timeout 20m

.PHONY: all build deps test vet proto proto-check unit demo bench bench-checkpoint bench-migrate bench-scheduler bench-balance clean soak

all: build

deps:
	./scripts/install-deps.sh

# One static binary: the agent re-executes it as each container's shim.
build:
	CGO_ENABLED=0 $(GO) build -o $(BIN) ./cmd/godwit

# proto regenerates the gRPC code committed beside the .proto files.
proto:
	protoc -I proto \
		--go_out=proto --go_opt=paths=source_relative \
		--go-grpc_out=proto --go-grpc_opt=paths=source_relative \
		proto/godwit/v1/*.proto

# proto-check fails when the committed generated code is stale.
proto-check: proto
	@git diff --exit-code -- proto || { echo "generated code in proto/ is stale: run 'make proto' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- proto)" || { echo "untracked generated files in proto/: run 'make proto' and commit"; git status --short -- proto; exit 1; }

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$'); exit 1; }
	$(GO) vet ./...

# test installs what it needs, then runs every test, the root ones included.
test: deps proto-check vet build
	$(GO) test $(GO_TEST_FLAGS) ./...

# unit runs only the fast tests that need no root.
unit:
	$(GO) test -short -count=1 ./...

# soak runs the fault-injection cluster tests (cluster-tests/
# cluster_faults_test.go) with seeds 1..SEEDS of every scenario instead of
# `make test`'s few; a failing seed is printed with the command that
# replays it alone (docs/testing.md). It needs root; about a minute a seed.
SEEDS ?= 100
soak: build
	GODWIT_SOAK_SEEDS=$(SEEDS) $(GO) test -count=1 -timeout 0 -v -run '^TestClusterFaults$$' ./cluster-tests

demo: build
	./scripts/demo.sh

# bench measures 100 idle containers on one agent against bare runc (see
# docs/benchmarks.md); it needs root.
bench: build
	$(GO) run ./bench/density --godwit $(BIN)

# bench-checkpoint compares checkpoint --export plus restore --from with
# Podman's, for 64 MiB, 512 MiB and 2 GiB containers (see
# docs/benchmarks.md); it needs root and installs Podman first.
bench-checkpoint: build
	scripts/install-bench-deps.sh
	$(GO) run ./bench/checkpoint --godwit $(BIN) --out bench-checkpoint.md

clean:
	rm -rf bin

# bench-migrate moves 64 MiB, 512 MiB and 2 GiB containers between two
# agents of a devcluster, against hand-scripted runc checkpoint, tar and
# restore and the raw TCP throughput (see docs/benchmarks.md); it needs root.
bench-migrate: build
	$(GO) run ./bench/migrate --godwit $(BIN) --out bench-migrate.md

# bench-scheduler measures placements per second committed through three
# scheduler replicas with durable raft storage (against in-memory raft and
# the FSM alone), one replica's memory holding 1,000 nodes and 30,000
# containers, and placement alone (see docs/benchmarks.md); it needs
# neither root nor the binary.
bench-scheduler:
	$(GO) run ./bench/scheduler --out bench-scheduler.md

# bench-balance simulates the balancer (scheduler/balance) on clusters of
# 100 and 1,000 nodes whose hot spots move, side by side with a baseline
# modelled on the Kubernetes descheduler's LowNodeUtilization, and draws
# the imbalance over time (see docs/benchmarks.md and docs/balance.md);
# it needs neither root nor the binary, and takes a few minutes.
bench-balance:
	$(GO) run ./bench/balance --out bench-balance.md --svg docs/balance-imbalance.svg
