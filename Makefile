# Vouch. The two commands: `make demo` and `make test`. Both install what is
# missing (Debian packages, as root) through `make deps` first.

GO       ?= go
STATE    ?= $(CURDIR)/.vouch
BIN      := $(CURDIR)/bin
export VOUCH_STATE_DIR := $(STATE)

.PHONY: demo demo-browser test deps build cards images bench fuzz vet clean

## demo: set everything up (make deps, build, cards: the script runs them,
## each a step it reports) and run the whole system (vouch all), shown
## working; Ctrl-C stops everything it started
demo:
	@.ci/demo

## demo-browser: beside a running make demo, the scripted back-office
## session in headless Chromium against it
demo-browser:
	@.ci/demo browser

## test: the whole suite with the race detector, real dependencies included
test: deps vet
	$(GO) test -race -count=1 -timeout 45m ./...

## deps: install missing Debian packages and make sure PostgreSQL answers
deps:
	.ci/deps

## build: bin/vouch, bin/cardagent, bin/phone, bin/pkcs11-mocks, bin/testregistry
build:
	$(GO) build -o $(BIN)/ ./cmd/... ./pkcs11-mocks ./registry/cmd/testregistry

## cards: the UZI-like test PKI and one SoftHSM token per test card
cards: build
	$(BIN)/pkcs11-mocks -dir $(STATE)/cards

## images: a container image per role (deploy/images.sh): FROM scratch for
## the roles that never sign, on a Debian base made by mmdebstrap for those
## that load a PKCS#11 module; uses the docker daemon of DOCKER_HOST
images: deps
	deploy/images.sh

## vet: go vet, and a production build (no test card profile in it) must compile
vet:
	$(GO) vet ./...
	$(GO) build -tags production -o /dev/null ./cmd/vouch ./cmd/cardagent ./cmd/phone

## bench: speed targets as ratios against bare references, each row the median of 3 runs with its spread and a busy mark; writes bench/results.json (BENCH=uploads,origin: those stages only, the other rows kept)
BENCH ?=
bench: deps build cards
	$(GO) run ./bench -vouch $(BIN)/vouch -out bench/results.json -only '$(BENCH)'

## fuzz: run every fuzz target for a short while
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParseName -fuzztime 20s -fuzzminimizetime 5s ./internal/uzi
	$(GO) test -run '^$$' -fuzz FuzzOtherNames -fuzztime 20s -fuzzminimizetime 5s ./internal/uzi
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 20s -fuzzminimizetime 5s ./internal/phonecode
	$(GO) test -run '^$$' -fuzz FuzzUnmarshalRecord -fuzztime 20s -fuzzminimizetime 5s ./internal/exposure
	$(GO) test -run '^$$' -fuzz FuzzUploadDecode -fuzztime 20s -fuzzminimizetime 5s ./internal/ingest
	$(GO) test -run '^$$' -fuzz FuzzOpen -fuzztime 20s -fuzzminimizetime 5s ./internal/export
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime 20s -fuzzminimizetime 5s ./internal/export
	$(GO) test -run '^$$' -fuzz FuzzParseBundle -fuzztime 20s -fuzzminimizetime 5s ./internal/protocol
	$(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime 20s -fuzzminimizetime 5s ./internal/protocol
	$(GO) test -run '^$$' -fuzz '^FuzzVerifyStatement$$' -fuzztime 20s -fuzzminimizetime 5s ./internal/protocol
	$(GO) test -run '^$$' -fuzz FuzzReadEntry -fuzztime 20s -fuzzminimizetime 5s ./internal/directory
	$(GO) test -run '^$$' -fuzz FuzzPagingCookie -fuzztime 20s -fuzzminimizetime 5s ./internal/directory
	$(GO) test -run '^$$' -fuzz '^FuzzReadMessage$$' -fuzztime 20s -fuzzminimizetime 5s ./internal/directory
	$(GO) test -run '^$$' -fuzz '^FuzzResultError$$' -fuzztime 20s -fuzzminimizetime 5s ./internal/directory
	$(GO) test -run '^$$' -fuzz '^FuzzGeneralizedTime$$' -fuzztime 20s -fuzzminimizetime 5s ./internal/directory
	$(GO) test -run '^$$' -fuzz '^FuzzCookieCSNs$$' -fuzztime 20s -fuzzminimizetime 5s ./internal/directory
	$(GO) test -run '^$$' -fuzz '^FuzzDNFastPath$$' -fuzztime 20s -fuzzminimizetime 5s ./internal/directory
	$(GO) test -run '^$$' -fuzz '^FuzzSyncMessage$$' -fuzztime 20s -fuzzminimizetime 5s ./internal/directory
	$(GO) test -run '^$$' -fuzz FuzzParseURI -fuzztime 20s -fuzzminimizetime 5s ./internal/p11
	$(GO) test -run '^$$' -fuzz '^FuzzReadMessage$$' -fuzztime 20s -fuzzminimizetime 5s ./internal/cardagent
	$(GO) test -run '^$$' -fuzz '^FuzzPath$$' -fuzztime 20s -fuzzminimizetime 5s ./internal/cdn
	$(GO) test -run '^$$' -fuzz '^FuzzParseIndex$$' -fuzztime 20s -fuzzminimizetime 5s ./cmd/phone
	$(GO) test -run '^$$' -fuzz '^FuzzReadKeys$$' -fuzztime 20s -fuzzminimizetime 5s ./cmd/phone
	$(GO) test -run '^$$' -fuzz '^FuzzServe$$' -fuzztime 20s -fuzzminimizetime 5s ./internal/cardagent
	$(GO) test -run '^$$' -fuzz '^FuzzTransmit$$' -fuzztime 20s -fuzzminimizetime 5s ./internal/virtualcard
	$(GO) test -run '^$$' -fuzz '^FuzzCheckpointSize$$' -fuzztime 20s -fuzzminimizetime 5s ./internal/transparency

clean:
	rm -rf $(BIN) $(STATE)
	@# The demo's database too, but only the default one: a DATABASE_URL
	@# someone set is theirs.
	@if [ -n "$$DATABASE_URL" ]; then echo "DATABASE_URL is set: its database is left alone"; \
	elif command -v psql >/dev/null; then psql -q "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable" \
		-c 'drop database if exists vouch with (force)' && echo "dropped the demo database vouch"; fi
