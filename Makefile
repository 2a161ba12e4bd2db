# ringkv: two commands on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: system-deps run test slow install chaos chaos-quick sim bench bench-quick clean

# The modules compiled with Cython (ringkv/compiled.py, D21; NATIVE ones are .pyx, D30):
# editing one rebuilds them.
COMPILED_MODS := $(shell sed -n 's/^    "\(ringkv\.[a-z_.]*\)",$$/\1/p' ringkv/compiled.py | tr . /)
COMPILED_SRC := $(foreach m,$(COMPILED_MODS),$(firstword $(wildcard $(m).py $(m).pyx)))

$(STAMP): pyproject.toml setup.py ringkv/compiled.py $(COMPILED_SRC)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $(STAMP)

# `make .venv` creates the environment with the package, test and benchmark dependencies.
$(VENV): $(STAMP)

install: $(STAMP)

# System tools some tests drive: ip (network namespaces), redis-cli and redis-benchmark
# (RESP compatibility). Installed with apt-get when missing and running as root; otherwise
# the tests that need them skip with a visible reason (CI, which is root, installs them).
system-deps:
	@missing=""; for t in ip redis-cli redis-benchmark; do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing system packages for:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 redis-tools >/dev/null; \
	  else echo "note: missing$$missing (apt-get install iproute2 redis-tools); tests needing them will skip"; fi; \
	fi

# Start a 5-node local cluster in the foreground (Ctrl-C stops it).
run: $(STAMP)
	$(BIN)/ringkv cluster up --nodes 5 --dir .ringkv-cluster --foreground

# Every test that belongs in the default run (slow soak runs excluded).
test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q

# Long soak runs marked `slow`.
slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# Chaos runs with real processes in network namespaces (root); each ends with one JSON line.
# chaos-quick: ~2.5 min, strict mode (read-your-writes asserted). chaos: ~11 min, sloppy mode.
chaos-quick: $(STAMP)
	$(BIN)/python -m ringkv.chaos --seed 20261125 --duration 120 --mode strict --long

chaos: $(STAMP)
	$(BIN)/python -m ringkv.chaos --seed 4 --duration 600 --mode sloppy --long --converge-timeout 120

# Deterministic simulation (docs/simulation.md): 1000 sloppy + 500 strict seeds of 60 virtual
# seconds each, every fault; each run ends with one JSON line, a failing seed prints its replay.
sim: $(STAMP)
	PYTHONHASHSEED=0 $(BIN)/ringkv simulate --seed 100000 --seeds 1000 --duration 60s --faults all --mode sloppy
	PYTHONHASHSEED=0 $(BIN)/ringkv simulate --seed 200000 --seeds 500 --duration 60s --faults all --mode strict

bench: $(STAMP)
	$(BIN)/python bench/storage.py
	$(BIN)/python bench/cluster.py

bench-quick: $(STAMP)
	$(BIN)/python bench/storage.py --quick
	$(BIN)/python bench/cluster.py --quick

clean:
	rm -rf $(VENV) .ringkv-cluster build *.egg-info
