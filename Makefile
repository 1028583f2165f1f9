# lifeline — one Makefile. `make` builds build/lifeline; `make test` runs every test.
# SANITIZE=1 builds with AddressSanitizer + UndefinedBehaviorSanitizer under build/asan;
# SANITIZE=thread with ThreadSanitizer under build/tsan (`make tsan-test`: the multi-worker tests).

CC       ?= cc
PYTHON   ?= /usr/bin/python3
SANITIZE ?=
ifeq ($(SANITIZE),1)
BUILD    ?= build/asan
SANFLAGS  = -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
OPT       = -O1
else ifeq ($(SANITIZE),thread)
BUILD    ?= build/tsan
SANFLAGS  = -fsanitize=thread -fno-omit-frame-pointer
OPT       = -O1
else
BUILD    ?= build
SANFLAGS  =
OPT       = -O2
endif

WARN     = -Wall -Wextra -Wundef -Wstrict-prototypes -Wpointer-arith -Wshadow -Werror
CFLAGS  += -std=c11 -D_GNU_SOURCE $(OPT) -g $(WARN) $(SANFLAGS) -Iproxy
LDFLAGS += $(SANFLAGS)
LDLIBS   = -lev -lhttp_parser -lyaml -lssl -lcrypto -lcares -lpthread -lm

SRCS     = $(sort $(wildcard proxy/*.c))
OBJS     = $(SRCS:proxy/%.c=$(BUILD)/obj/%.o)
LIBOBJS  = $(filter-out $(BUILD)/obj/main.o,$(OBJS))
UNIT_SRC = $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN = $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all clean test tsan-test unit fuzz fuzz-replay run deps deps-demo bench floor benchup openloop hostile latency docker-test k8s-check
all: $(BUILD)/lifeline

$(BUILD)/lifeline: $(OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/obj/%.o: proxy/%.c $(wildcard proxy/*.h) | $(BUILD)/obj
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(LIBOBJS) $(wildcard proxy/*.h) $(wildcard tests/unit/*.h) | $(BUILD)/tests
	$(CC) $(CFLAGS) -o $@ $< $(LIBOBJS) $(LDFLAGS) $(UNIT_LDFLAGS) $(LDLIBS) -lcmocka

# test_conf_oom fails allocations one at a time: lifeline's calls go through its __wrap_ functions.
$(BUILD)/tests/test_conf_oom: UNIT_LDFLAGS = -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup,--wrap=strndup
# test_dns counts the resolver's reads per wake-up through __wrap_recvfrom and __wrap_ares_process_fd.
$(BUILD)/tests/test_dns: UNIT_LDFLAGS = -Wl,--wrap=recvfrom,--wrap=ares_process_fd

$(BUILD)/obj $(BUILD)/tests:
	mkdir -p $@

unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

deps:
	bash scripts/deps.sh

deps-demo:
	bash scripts/deps.sh demo

# Every test: unit tests (plain and sanitized), the fuzz corpus replay, then the integration suite
# against the sanitized binary (leaks fail: ASan's leak checker runs at exit and the suite checks
# the exit status of every lifeline it stops). The memory tests measure RSS, which ASan's
# allocator and quarantine would distort (they skip under it), so they run once more against the
# plain binary, which also runs the slab allocators that ASan builds replace with calloc.
# (a user who cannot install is told what is missing, and the tests run with what is there: those
# that need a missing tool skip or say so)
test:
	bash scripts/deps.sh || echo "make test: some packages are missing (above); going on without them" >&2
	$(MAKE) all
	$(MAKE) unit
	$(MAKE) SANITIZE=1 unit
	$(MAKE) SANITIZE=1 all
	$(MAKE) fuzz-replay
	LIFELINE_BIN=$(CURDIR)/build/asan/lifeline $(PYTHON) -m pytest -q tests/integration
	LIFELINE_BIN=$(CURDIR)/build/lifeline $(PYTHON) -m pytest -q tests/integration/test_memory.py
	$(MAKE) tsan-test

# The unit tests (the stale store's threads among them), then the tests where threads meet (workers, the loader thread's reloads, the main thread's health
# checks and DNS, the process-wide stale store and outlier state) against a ThreadSanitizer build:
# a data race is a report in lifeline's stderr, which fails the test like an ASan report. Timeouts
# scaled for TSan's slowdown.
TSAN_TESTS = test_workers.py test_stale.py test_reload.py test_midflight.py test_reload_mix.py test_reload_accept_queue.py test_outlier.py test_dns.py test_watch_config.py
tsan-test:
	$(MAKE) SANITIZE=thread all
	$(MAKE) SANITIZE=thread unit
	LIFELINE_TIME_SCALE=$${LIFELINE_TIME_SCALE:-3} LIFELINE_BIN=$(CURDIR)/build/tsan/lifeline \
	  $(PYTHON) -m pytest -q $(addprefix tests/integration/,$(TSAN_TESTS))

FUZZ_SRC = $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BIN = $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)
FUZZ_LIB = $(filter-out proxy/main.c,$(SRCS))
FUZZ_OBJ = $(FUZZ_LIB:proxy/%.c=build/fuzz/obj/%.o)
FUZZ_CFLAGS = -std=c11 -D_GNU_SOURCE -O1 -g -Iproxy -fno-sanitize-recover=all
# The library is compiled once, with coverage for the fuzzer (fuzzer-no-link), and linked into
# every driver: not once per driver.
build/fuzz/obj/%.o: proxy/%.c $(wildcard proxy/*.h)
	@mkdir -p build/fuzz/obj
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,address,undefined -c -o $@ $<
build/fuzz/%: tests/fuzz/%.c $(wildcard tests/fuzz/*.h) $(FUZZ_OBJ)
	@mkdir -p build/fuzz
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined -o $@ $< $(FUZZ_OBJ) $(LDLIBS)

# Replays the checked-in corpus (fast, deterministic); `make fuzz FUZZ_SECONDS=60` explores.
fuzz-replay: $(FUZZ_BIN)
	@set -e; for f in $(FUZZ_BIN); do n=$$(basename $$f); echo "== $$n corpus"; \
	  $$f -runs=0 tests/fuzz/corpus/$${n#fuzz_} ; done
FUZZ_SECONDS ?= 30
fuzz: $(FUZZ_BIN)
	@set -e; for f in $(FUZZ_BIN); do n=$$(basename $$f); mkdir -p build/fuzz/corpus-$$n; \
	  $$f -max_total_time=$(FUZZ_SECONDS) build/fuzz/corpus-$$n tests/fuzz/corpus/$${n#fuzz_}; done

# (the packages first, then the build: as prerequisites, make -j would build before they are in)
run: deps-demo
	$(MAKE) all
	bash scripts/demo.sh

# deploy/k8s/*.yaml against the Kubernetes API schemas (npm's kubernetes-models; skipped without npm)
k8s-check:
	bash scripts/k8s-validate.sh

bench: all floor benchup
	bash scripts/bench.sh

# scripts/floor.c: the benchmark's bare forwarder (issue 13), with its io_uring mode when liburing is
# installed (liburing-dev, in scripts/deps.sh); without it `build/floor --uring` says so.
FLOOR_URING := $(shell pkg-config --exists liburing 2>/dev/null && echo 1)
floor: build/floor
build/floor: scripts/floor.c
	@mkdir -p build
	$(CC) -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror $(if $(FLOOR_URING),-DFLOOR_URING) \
	  -o $@ $< $(if $(FLOOR_URING),-luring)

# scripts/benchup.c: the benchmark's upstream (a canned 200 answer at the least CPU per request).
benchup: build/benchup
build/benchup: scripts/benchup.c
	@mkdir -p build
	$(CC) -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -o $@ $<

# scripts/openloop.c: the open-loop load generator behind scripts/latency.sh (fixed request rate,
# latency from each request's scheduled time).
openloop: build/openloop
build/openloop: scripts/openloop.c
	@mkdir -p build
	$(CC) -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -o $@ $<

# scripts/slow/hostile.c: slowloris connections and slow readers behind scripts/slow-clients.sh.
hostile: build/hostile
build/hostile: scripts/slow/hostile.c
	@mkdir -p build
	$(CC) -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -o $@ $<

latency: all openloop
	bash scripts/latency.sh

# Builds the Docker image (lifeline:test) and proves it: serves, turns healthy, drains on docker stop.
docker-test:
	bash scripts/docker-test.sh

clean:
	rm -rf build
