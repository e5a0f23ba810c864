# cab — a secure cross-site Ethernet cable.
#
#   make          build ./cab
#   make demo     two sites in network namespaces, ping across the cable (root)
#   make test     install test dependencies, then vet, cross, unit, fuzz seeds
#                 and integration tests (root; installs Debian packages)
#   make cross    build cab for Linux, FreeBSD, macOS and Windows on amd64 and
#                 arm64, and go vet every package for each system
#   make bench    cab side by side with kernel VXLAN, fastd and OpenVPN (root;
#                 installs them); prints a Markdown table
#   make bench-dns  the DNS tunnel through a real Unbound at 0, 1 and 5 %
#                 query loss (root); prints a Markdown table
#   make soak     a hub of 50 clients for an hour of mixed traffic, its
#                 goroutines, open files and RSS every minute (TestSoak with
#                 CAB_SOAK=1h; make test runs it for 60 s), then quiet and
#                 with one client flooding broadcasts (raw frames, then
#                 ping -b), about 70 minutes (root); prints Markdown tables
#   make gobench  the Go benchmarks (seal/open, fdb, clamp, the whole cable)
#   make install  cab into $(PREFIX)/bin, the systemd unit cab@.service,
#                 an example /etc/cab/example.toml and the pre-shared key
#                 it names, /etc/cab/site.psk (DESTDIR honoured)

GO      ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
DEBS    := iproute2 iputils-ping tcpdump iperf3 procps util-linux vde2 openvswitch-switch nftables conntrack openssh-server openssh-client systemd unbound

# DEMO_CMDS are what make demo runs besides cab and a shell, and DEMO_DEBS
# the Debian packages that have them; make demo installs those missing.
DEMO_CMDS := ip ping
DEMO_DEBS := iproute2 iputils-ping

BENCH_DEBS := iperf3 iputils-ping iproute2 fastd openvpn openssl python3 openssh-server openssh-client procps

PREFIX  ?= /usr/local

# CROSS is every system and architecture cab must build for; make cross
# fails when one does not. The README's "Other systems" section names them.
CROSS   := linux/amd64 linux/arm64 freebsd/amd64 freebsd/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64

.PHONY: all build demo test deps unit integration fuzz vet cross bench bench-dns soak gobench install clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o cab ./cmd/cab

demo: build
	@if [ "$$(id -u)" != 0 ]; then echo "make demo needs root (network namespaces, TAP devices): run sudo make demo"; exit 1; fi
	@missing=""; for c in $(DEMO_CMDS); do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
		if command -v apt-get >/dev/null 2>&1; then \
			echo "make demo: installing $(DEMO_DEBS) for:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEMO_DEBS) >/dev/null; \
		else \
			echo "make demo needs:$$missing (Debian: $(DEMO_DEBS)); install them and run it again"; exit 1; \
		fi; \
	fi
	bash test/demo.sh ./cab

# deps installs what the tests need on a fresh Debian machine.
deps:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	$(GO) mod download

vet:
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...

# cross builds ./cmd/cab for each of CROSS, and runs go vet (which
# type-checks the tests too) once per system, so that a Linux-only symbol
# in shared code fails here rather than on a user's machine.
cross:
	@for p in $(CROSS); do \
		os=$${p%/*}; arch=$${p#*/}; \
		echo "cross: build $$os/$$arch"; \
		GOOS=$$os GOARCH=$$arch $(GO) build -o /dev/null ./cmd/cab || exit 1; \
		if [ $$arch = amd64 ]; then \
			echo "cross: vet $$os/$$arch"; \
			GOOS=$$os GOARCH=$$arch $(GO) vet ./... || exit 1; \
		fi; \
	done

unit:
	$(GO) test -count=1 -race $$($(GO) list ./... | grep -v /test$$)

integration: build
	$(GO) test -count=1 -v -timeout 20m ./test/

test: deps vet cross unit integration

bench: build
	@if [ "$$(id -u)" != 0 ]; then echo "make bench needs root (network namespaces): run sudo make bench"; exit 1; fi
	@missing=""; for p in $(BENCH_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	bash bench/bench.sh ./cab

bench-dns: build deps
	bash bench/dns.sh ./cab

soak: build
	@if [ "$$(id -u)" != 0 ]; then echo "make soak needs root (network namespaces, TAP devices): run sudo make soak"; exit 1; fi
	CAB_SOAK=$${CAB_SOAK:-1h} CAB_SOAK_EVERY=$${CAB_SOAK_EVERY:-1m} $(GO) test -count=1 -v -timeout 0 -run '^TestSoak$$' ./test/
	FLOOD=raw bash bench/hub.sh ./cab
	FLOOD=ping bash bench/hub.sh ./cab

gobench:
	$(GO) test -run '^$$' -bench . -benchmem $$($(GO) list ./... | grep -v /test$$)

install:
	@test -x cab || $(MAKE) build
	install -D -m 0755 cab $(DESTDIR)$(PREFIX)/bin/cab
	sed 's|/usr/local/bin/cab|$(PREFIX)/bin/cab|' systemd/cab@.service > cab@.service.tmp
	install -D -m 0644 cab@.service.tmp $(DESTDIR)/etc/systemd/system/cab@.service
	rm -f cab@.service.tmp
	install -d -m 0700 $(DESTDIR)/etc/cab
	test -e $(DESTDIR)/etc/cab/example.toml || install -m 0600 configs/two-site-server.toml $(DESTDIR)/etc/cab/example.toml
	@# The pre-shared key example.toml names, so that it runs as installed;
	@# the other site needs a copy of it.
	@test -e $(DESTDIR)/etc/cab/site.psk || { (umask 077 && ./cab genkey > $(DESTDIR)/etc/cab/site.psk) && \
		echo "made /etc/cab/site.psk, the pre-shared key of example.toml: copy it to the other site"; }

clean:
	rm -f cab
