# securechat: `make demo` runs the main job, `make demo-cluster` two replicas over NATS, `make test` the test suite.
# A machine with Python 3 (>= 3.10) and make is enough: everything else goes
# into a project-local virtualenv, .venv, created on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-cluster demo-ca test proto install deploy-check image examples clean

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

test: $(STAMP)
	$(BIN)/python -m pytest

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
