# ringkv: two commands on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test slow install chaos chaos-quick sim bench bench-quick clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $(STAMP)

# `make .venv` creates the environment with the package, test and benchmark dependencies.
$(VENV): $(STAMP)

install: $(STAMP)

# Start a 5-node local cluster in the foreground (Ctrl-C stops it).
run: $(STAMP)
	$(BIN)/ringkv cluster up --nodes 5 --dir .ringkv-cluster --foreground

# Every test that belongs in the default run (slow soak runs excluded).
test: $(STAMP)
	$(BIN)/python -m pytest -q

# Long soak runs marked `slow`.
slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python bench/storage.py
	$(BIN)/python bench/cluster.py

bench-quick: $(STAMP)
	$(BIN)/python bench/storage.py --quick
	$(BIN)/python bench/cluster.py --quick

clean:
	rm -rf $(VENV) .ringkv-cluster build *.egg-info
