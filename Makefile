# meshlet: `make demo` runs the local demo mesh, `make test` the whole suite.
GO        ?= go
GOBIN     := $(shell $(GO) env GOPATH)/bin
PKGS      := ./...
TEST_TIMEOUT ?= 12m

.PHONY: all build demo test deps lint unit bench soak clean

all: build

build:
	$(GO) build -o bin/ztunnel ./cmd/ztunnel

demo: build
	./bin/ztunnel demo

deps:
	./scripts/deps.sh

lint: deps
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '_bpfe[lb].go$$')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GOBIN)/staticcheck $(PKGS)

unit:
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)

test: lint unit

bench: build
	./scripts/bench-deps.sh
	./bench/run.sh

# soak runs TestSoak (integration/soak_test.go, build tag soak) for
# SOAK_DURATION (default 10m) at 1000 rps; not part of test.
soak:
	./scripts/soak.sh

clean:
	rm -rf bin bench/out
