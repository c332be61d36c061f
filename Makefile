# wsgate — what CI runs is what you run.
# Go from PATH, else where the Go tarball installs it.
GO       ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
# Tests build binaries with `go` and look for nginx in /usr/sbin.
export PATH := $(dir $(GO)):$(PATH):/usr/sbin
# safe.directory: under `sudo make install` git refuses a checkout that root
# does not own, and the binary would say "dev".
GIT      := git -c safe.directory=$(CURDIR)
VERSION  ?= $(shell $(GIT) describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell $(GIT) rev-parse HEAD 2>/dev/null)
LDFLAGS  := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
BIN      := bin/wsgate
# giveback PATHS: under sudo, give PATHS back to the user who ran it, whose
# next make (or make clean) could not overwrite root's files.
giveback = if [ "$$(id -u)" = 0 ] && [ -n "$${SUDO_UID:-}" ] && [ -n "$${SUDO_GID:-}" ]; then \
	chown "$$SUDO_UID:$$SUDO_GID" $(1) || echo "warning: could not give $(1) back to uid $$SUDO_UID"; fi

.PHONY: all build run nginx-installed nginx-if-root race-ready test vet fmt-check fuzz bench profile clean

all: build

build: $(BIN)

$(BIN): FORCE
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/wsgate
	@# Under sudo (make install) leave the build output to the user: bin/
	@# too when the binary is in it.
	@d=$$(dirname $(BIN)); case $$d in bin | ./bin) d="$$d $(BIN)";; *) d=$(BIN);; esac; \
		$(call giveback,$$d)

FORCE:

# The local gateway: nginx plus the sidecars, in the foreground (Ctrl-C stops).
run: build nginx-installed
	$(BIN) up $(if $(CONFIG),-config $(CONFIG))

# Installs Debian's nginx when no nginx is found and apt can install it.
# `make test` only tries (as root), and adds Debian's stream module, which
# the client_proxy/push_proxy = "stream" tests need (they skip without it;
# nginx's tests skip without nginx).
STREAM_SO := /usr/lib/nginx/modules/ngx_stream_module.so
nginx-if-root:
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory nginx-installed WITH_STREAM=1; \
	elif ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then \
		echo "note: nginx is not installed; the tests that need it will skip (make run installs it)"; fi

nginx-installed:
	@pkgs=; command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || pkgs=nginx; \
	if [ -n "$(WITH_STREAM)" ] && [ ! -f $(STREAM_SO) ] && { [ -n "$$pkgs" ] || dpkg -s nginx-common >/dev/null 2>&1; }; then \
		pkgs="$${pkgs:+$$pkgs }libnginx-mod-stream"; fi; \
	[ -n "$$pkgs" ] || exit 0; \
	if ! command -v apt-get >/dev/null 2>&1; then \
		case "$$pkgs" in nginx*) echo "nginx is not installed and there is no apt-get: install nginx (1.18 or later) and retry"; exit 1;; esac; \
		exit 0; fi; \
	SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	echo "installing $$pkgs: $$SUDO apt-get install -y $$pkgs"; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$pkgs

# go test -race needs cgo, which Go turns off when it finds no C compiler,
# as on a fresh Debian: installs gcc as root, else says what to install.
race-ready:
	@[ "$$($(GO) env CGO_ENABLED)" = 1 ] && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing gcc (go test -race needs cgo): apt-get install -y gcc libc6-dev"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev; fi; \
	[ "$$($(GO) env CGO_ENABLED)" = 1 ] || { echo "go test -race needs cgo, and Go finds no C compiler (or CGO_ENABLED=0): apt-get install gcc, or run make test as root"; exit 1; }

# The whole suite: static checks, then every package (integration tests
# included, against real nginx) under the race detector.
test: nginx-if-root race-ready fmt-check vet
	$(GO) test -race -count=1 -timeout 15m ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# arm64 too: the sidecar makes raw system calls, whose numbers differ by
# architecture (arm64 has no epoll_wait).
vet:
	$(GO) vet ./...
	GOARCH=arm64 $(GO) vet ./...

# Short native fuzzing runs of every parser; FUZZTIME=5m for a longer run.
FUZZTIME ?= 20s
fuzz:
	$(GO) test ./sidecar -run '^$$' -fuzz '^FuzzPushRequest$$' -fuzztime $(FUZZTIME)
	$(GO) test ./sidecar -run '^$$' -fuzz '^FuzzFrames$$' -fuzztime $(FUZZTIME)
	$(GO) test ./sidecar -run '^$$' -fuzz '^FuzzUTF8Stream$$' -fuzztime $(FUZZTIME)
	$(GO) test ./sidecar -run '^$$' -fuzz '^FuzzProxyHeader$$' -fuzztime $(FUZZTIME)
	$(GO) test ./sidecar -run '^$$' -fuzz '^FuzzFastPush$$' -fuzztime $(FUZZTIME)
	$(GO) test ./sidecar -run '^$$' -fuzz '^FuzzPushConn$$' -fuzztime $(FUZZTIME)
	$(GO) test ./config -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME)

# wsgate against Nchan, side by side on loopback (bench/bench.sh; CLIENTS=,
# PUSHES=, ROUNDS= ...). Installs libnginx-mod-nchan when it can.
bench: build nginx-installed
	$(GO) test -run '^$$' -bench . -benchmem ./sidecar
	$(GO) build -o bin/wsbench ./cmd/wsbench
	bash bench/bench.sh

# Where the CPUs' time goes in each phase of the bench (perf record on both
# CPUs; bench/bench.sh's summarize): one round of every setup at the bench's
# load, into bin/profile/*.txt. wsgate is built with its symbols for it. A
# profiled run's figures are not for comparing: perf costs CPU too.
profile: nginx-installed
	$(MAKE) build LDFLAGS='-X main.version=$(VERSION) -X main.commit=$(COMMIT)'
	$(GO) build -o bin/wsbench ./cmd/wsbench
	PROFILE=$(CURDIR)/bin/profile ROUNDS=$${ROUNDS:-1} bash bench/bench.sh
	@# Under sudo, leave the profiles to the user too (make clean).
	@$(call giveback,bin/wsbench bin/profile bin/profile/*)

clean:
	rm -rf bin

# --- Production install under systemd (systemd/README.md) ---------------------
# make install [PREFIX=/usr/local] [SYSCONFDIR=/etc] [DESTDIR=]
# Units go to $(PREFIX)/lib/systemd/system when systemd searches it (PREFIX
# /usr/local or /usr), leaving /etc/systemd/system to the admin's overrides,
# and to /etc/systemd/system for any other PREFIX; their ExecStart= is rewritten
# to $(PREFIX)/bin/wsgate and $(SYSCONFDIR)/wsgate/wsgate.toml. An existing
# wsgate.toml is kept; the nginx snippets it has are rendered from it every
# time: `wsgate nginx -part http` into $(NGINXDIR)/conf.d/wsgate.conf (a
# comment only when nginx.client_proxy is "stream" and nginx.push_proxy is
# not "http"), `-part location` into $(NGINXDIR)/snippets/wsgate-location.conf
# (with client_proxy = "http") and `-part stream` into
# $(NGINXDIR)/wsgate-stream.conf (for inclusion inside stream{}, when either
# is "stream"). A snippet left from another combination is named in a
# warning: nginx.conf includes it, so it is not removed. `wsgate systemd`
# writes the unit drop-ins the TOML needs into $(UNITDIR) (with
# nginx.push_proxy = "none", each push socket's port) and removes the others.
PREFIX     ?= /usr/local
SYSCONFDIR ?= /etc
UNITDIR    ?= $(if $(filter /usr /usr/local,$(PREFIX)),$(PREFIX)/lib/systemd/system,/etc/systemd/system)
NGINXDIR   ?= $(SYSCONFDIR)/nginx
UNITS      := wsgate@.service wsgate-ws@.socket wsgate-push@.socket wsgate.target

.PHONY: install test-systemd

install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/wsgate \
		$(DESTDIR)$(NGINXDIR)/conf.d $(DESTDIR)$(NGINXDIR)/snippets
	install -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/wsgate
	for u in $(UNITS); do \
		sed -e 's|/usr/local/bin/wsgate|$(PREFIX)/bin/wsgate|g' \
		    -e 's|/etc/wsgate/|$(SYSCONFDIR)/wsgate/|g' systemd/$$u > $(DESTDIR)$(UNITDIR)/$$u.tmp && \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$$u.tmp && mv -f $(DESTDIR)$(UNITDIR)/$$u.tmp $(DESTDIR)$(UNITDIR)/$$u || exit 1; \
	done
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/wsgate/wsgate.toml ]; then \
		echo "keeping existing $(DESTDIR)$(SYSCONFDIR)/wsgate/wsgate.toml"; \
	else \
		echo "install -m 0644 systemd/wsgate.toml $(DESTDIR)$(SYSCONFDIR)/wsgate/wsgate.toml"; \
		install -m 0644 systemd/wsgate.toml $(DESTDIR)$(SYSCONFDIR)/wsgate/wsgate.toml; \
	fi
	@# Each snippet the TOML has (wsgate nginx -part fails on one it has
	@# not, once the whole config renders); conf.d/wsgate.conf always, as
	@# nginx includes all of conf.d.
	@bin=$(DESTDIR)$(PREFIX)/bin/wsgate; cfg=$(DESTDIR)$(SYSCONFDIR)/wsgate/wsgate.toml; \
	$$bin nginx -config $$cfg >/dev/null || exit 1; \
	for part in http stream location; do \
		case $$part in \
		http) f=$(DESTDIR)$(NGINXDIR)/conf.d/wsgate.conf; next="nginx includes conf.d/ in http{} itself";; \
		stream) f=$(DESTDIR)$(NGINXDIR)/wsgate-stream.conf; next="add \"stream { include $(NGINXDIR)/wsgate-stream.conf; }\" to nginx.conf (outside http{}, with the stream module loaded)";; \
		location) f=$(DESTDIR)$(NGINXDIR)/snippets/wsgate-location.conf; next="include snippets/wsgate-location.conf in your server{}";; \
		esac; \
		if $$bin nginx -config $$cfg -part $$part > $$f.tmp 2>/dev/null; then \
			chmod 0644 $$f.tmp && mv -f $$f.tmp $$f && echo "wsgate nginx -part $$part > $$f: $$next" || exit 1; \
		elif [ $$part = http ]; then \
			echo "# wsgate: nothing for http{}: nginx.client_proxy is \"stream\" and nginx.push_proxy is not \"http\"" > $$f.tmp && \
			chmod 0644 $$f.tmp && mv -f $$f.tmp $$f && echo "$$f: nothing for http{} with this TOML" || exit 1; \
		else \
			rm -f $$f.tmp; \
			if [ -e $$f ]; then echo "warning: $$f is left from another nginx.client_proxy or nginx.push_proxy: remove it and its include, or nginx -t fails"; fi; \
		fi; \
	done; \
	$$bin systemd -config $$cfg -dir $(DESTDIR)$(UNITDIR) || exit 1; \
	echo "next: systemctl enable --now wsgate.target, reload nginx (systemd/README.md)"
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then echo "systemctl daemon-reload"; systemctl daemon-reload; fi

# Boots a Debian 12 container under systemd-nspawn and tests the installed
# units for real (root only; builds and caches the rootfs on first use).
test-systemd:
	bash systemd/test/boot.sh
