# StreamHub: `make run` starts a development server, `make test` checks everything.

GO     ?= go
MODULE := github.com/streamhub/streamhub
BIN    := $(CURDIR)/bin
# goa gen finds protoc's Go plugins on PATH: the pinned ones in ./bin come first.
export PATH := $(BIN):$(PATH)

.PHONY: all tools gen check-gen build run test lint bench screenshot

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
build:
	$(GO) build -o $(BIN)/ ./cmd/...

## run: start a server with development defaults (gRPC :50051, WebSocket and demo page on http://localhost:8080/, admin :8081)
run:
	$(GO) run ./cmd/streamhub $(ARGS)

## test: vet, the race-enabled tests, and check-gen when protoc is present
test:
	$(GO) vet ./...
	$(GO) test -race -timeout 5m ./...
	@if command -v protoc >/dev/null 2>&1; then $(MAKE) --no-print-directory check-gen; \
	else echo "protoc not found: check-gen skipped"; fi

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
