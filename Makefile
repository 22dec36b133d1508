# StreamHub: `make run` starts a development server, `make test` checks everything.

GO     ?= go
MODULE := github.com/streamhub/streamhub
# The approved Go toolchain. A machine's own go command fetches it through the
# module proxy on first use (about 76 MB, once); go.mod's go line names it too,
# but a machine with GOTOOLCHAIN=local would refuse to switch to it by itself.
export GOTOOLCHAIN := go1.27.3
BIN    := $(CURDIR)/bin
# goa gen finds protoc's Go plugins on PATH: the pinned ones in ./bin come first.
export PATH := $(BIN):$(PATH)

.PHONY: all tools gen check-gen build run test soak lint bench vulncheck image screenshot cluster

# govulncheck and the Go vulnerability database it reads, pinned. No online
# database is reachable from CI, so the database is built from the
# golang.org/x/vulndb module (its OSV files) with that module's indexdb.
GOVULNCHECK_VERSION := v1.9.0
VULNDB_VERSION      := v0.0.0-20261105234957-e22db6528018
VULNDB              := $(BIN)/vulndb/$(VULNDB_VERSION)

all: build

## tools: install the pinned goa, protoc-gen-go, protoc-gen-go-grpc and staticcheck into ./bin
tools:
	GOBIN=$(BIN) $(GO) install tool

## gen: regenerate gen/ from design/ (needs protoc)
gen: tools
	cd $(CURDIR) && $(BIN)/goa gen $(MODULE)/design

## check-gen: fail if regenerating would change gen/; the working tree is not touched
check-gen: tools
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	tar --exclude=./.git --exclude=./bin -cf - . | tar -xf - -C "$$tmp" && \
	(cd "$$tmp" && $(BIN)/goa gen $(MODULE)/design >/dev/null) && \
	diff -r gen "$$tmp/gen" && echo "gen/ is in sync with design/"

## build: build the server and the CLI into ./bin
# -buildvcs=auto records the git revision for --version, even where GOFLAGS
# turns stamping off; outside a checkout there is simply none.
build:
	$(GO) build -buildvcs=auto -o $(BIN)/ ./cmd/...

## run: start a server with development defaults (gRPC :50051, WebSocket and demo page on http://localhost:8080/, admin :8081)
run:
	$(GO) run ./cmd/streamhub $(ARGS)

## test: vet, the race-enabled tests (the fault-injection suite's short run among them), the
## service's whole suite again on the Redis engine (both skipped without redis-server), and
## check-gen when protoc is present
test:
	$(GO) vet ./...
	$(GO) test -race -timeout 5m ./...
	STREAMHUB_TEST_ENGINE=redis $(GO) test -race -count=1 -timeout 5m ./streaming/
	@if command -v protoc >/dev/null 2>&1; then $(MAKE) --no-print-directory check-gen; \
	else echo "protoc not found: check-gen skipped"; fi

## soak: the fault-injection suite's long run — three instances on Redis, 1,000 faults, about five
## minutes — and its figures (needs redis-server). More flags: make soak ARGS="-soak.seed=42 -soak.logdir=/tmp/soak"
SOAK_FAULTS ?= 1000
soak:
	STREAMHUB_REQUIRE_REDIS=1 $(GO) test -race -count=1 -timeout 60m -run '^TestSoak$$' -v ./internal/soak \
		-args -soak.faults=$(SOAK_FAULTS) $(ARGS)

## cluster: Redis and three instances sharing sessions, as plain processes on this machine
## (needs redis-server; deploy/cluster.sh says more). Ctrl-C stops them all.
cluster: build
	./deploy/cluster.sh

## image: the server's container image, built without Docker, as an OCI image layout
## tarball (bin/streamhub-image.tar: docker load -i, podman load -i, skopeo copy oci-archive:...).
## Another architecture: make image GOARCH=arm64
image:
	CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -buildvcs=auto -ldflags='-s -w' -o $(BIN)/linux/streamhub ./cmd/streamhub
	env -u GOOS -u GOARCH $(GO) run ./cmd/streamhub-image -binary $(BIN)/linux/streamhub -out $(BIN)/streamhub-image.tar

## bench: build, then measure StreamHub against a bare grpc-go server (flags: make bench ARGS="-scenarios 1,2 -json")
bench: build
	$(BIN)/streamhub-bench -server-bin $(BIN)/streamhub $(ARGS)

## screenshot: retake docs/demo-page.png, the README's picture of the demo page (needs chromium)
screenshot:
	STREAMHUB_REQUIRE_CHROMIUM=1 STREAMHUB_SCREENSHOT=$(CURDIR)/docs/demo-page.png \
	$(GO) test -count=1 -run '^TestDemoPageScreenshot$$' ./cmd/streamhub

## lint: gofmt, go vet and staticcheck on the hand-written code, and go.mod tidy
lint: tools
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) mod tidy -diff
	$(GO) vet ./...
	$(BIN)/staticcheck $$($(GO) list ./... | grep -v '/gen/')

## vulncheck: govulncheck against the pinned offline database; any reachable vulnerability fails
vulncheck: $(VULNDB)/index/db.json
	$(GO) run golang.org/x/vuln/cmd/govulncheck@$(GOVULNCHECK_VERSION) -db file://$(VULNDB) ./...

# The database, built once per pinned version (about two minutes).
$(VULNDB)/index/db.json:
	rm -rf $(VULNDB).tmp
	$(GO) mod download golang.org/x/vulndb@$(VULNDB_VERSION)
	$(GO) run golang.org/x/vulndb/cmd/indexdb@$(VULNDB_VERSION) \
		-vulns "$$($(GO) env GOMODCACHE)/golang.org/x/vulndb@$(VULNDB_VERSION)/data/osv" -out $(VULNDB).tmp
	rm -rf $(VULNDB) && mv $(VULNDB).tmp $(VULNDB)
