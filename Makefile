# securechat: `make demo` runs the main job, `make demo-cluster` two replicas over NATS, `make test` the test suite and `make lint`.
# A machine with Python 3 (>= 3.10) and make is enough: everything else goes
# into a project-local virtualenv, .venv, created on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-cluster demo-ca test lint proto install deploy-check image examples clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	# Bytecode up front: an editable install is not compiled, and with
	# PYTHONDONTWRITEBYTECODE set every CLI start would compile it again.
	$(BIN)/python -m compileall -q securechat
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python tools/demo.py

demo-cluster: $(STAMP)
	$(BIN)/python tools/demo_cluster.py

demo-ca: $(STAMP)
	$(BIN)/python tools/demo_ca.py

# The tests, then the lint gate: both always run, and either failing fails
# `make test` (pytest's own exit code wins, so .ci/run still sees its 5).
test: $(STAMP)
	status=0; $(BIN)/python -m pytest || status=$$?; \
	$(MAKE) --no-print-directory lint || { [ "$$status" -ne 0 ] || status=1; }; \
	exit $$status

# Zero findings on securechat/ (generated stubs in securechat/_gen aside):
# ruff's rules and formatting from pyproject.toml, and mypy --strict.
lint: $(STAMP)
	status=0; \
	$(BIN)/ruff check securechat || status=1; \
	$(BIN)/ruff format --check securechat || status=1; \
	$(BIN)/mypy --strict securechat || status=1; \
	exit $$status

proto: $(STAMP)
	$(BIN)/python tools/protogen.py

deploy-check: $(STAMP)
	bash deploy/check.sh

# The container image, securechat:local: docker where an engine answers,
# else podman/buildah (apt-get installed as root), with the base bootstrapped
# from Debian packages when no image registry is reachable. BASE=pull|bootstrap.
image:
	bash deploy/docker/build.sh

# The Go, Node and Python example clients, built and their dependencies installed.
examples: $(STAMP)
	bash examples/go/build.sh
	bash examples/node/setup.sh

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info examples/go/.gopath examples/go/bin examples/node/node_modules
