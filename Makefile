# Two commands matter: `make demo` and `make test`.  Each sets itself up
# idempotently (virtualenv, pip, npm, migrations) on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= .demo

.PHONY: setup browser haproxy test demo demo-shell bench soak clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $(STAMP)

setup: $(STAMP)

# The browser tests drive Debian's chromium (never a downloaded browser).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  apt-get update -qq >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

# The scale-out test and soak put Debian's HAProxy in front of three gateways (tests/scaleout_rig.py).
haproxy:
	@command -v haproxy >/dev/null || test -x /usr/sbin/haproxy || { \
	  apt-get update -qq >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null; }

# pytest-xdist: one worker per CPU (at most 8), whole test files per worker (tests/parallel.py gives each
# worker its own Redis database; pytest-django its own test database).  PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= auto
test: setup browser haproxy
	$(PY) -m pytest -n $(PYTEST_WORKERS) --maxprocesses 8 --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

demo: setup
	$(PY) -m deploy.demo --dir $(DEMO_DIR)

# A shell with the demo's environment ($(DEMO_DIR)/env, written by `make demo`): `python manage.py review list`
# reads the demo's database, kubectl goes through the gateway as the demo agent.
demo-shell:
	@test -f $(DEMO_DIR)/env || { echo "make demo-shell: no $(DEMO_DIR)/env yet: run make demo (in another terminal) first"; exit 1; }
	@echo "Airlock demo shell: python manage.py ... uses the demo's database, kubectl the agent's kubeconfig; exit to leave." >&2
	@. "$(abspath $(DEMO_DIR))/env" && exec "$${SHELL:-/bin/sh}" -i

bench: setup
	$(PY) -m bench.run

# The resilience suite's long forms (bench/soak.py): faults, kills and fuzz under load on two gateways,
# under ten minutes; then the scale-out long form (bench/scaleout.py): three gateways behind HAProxy, and
# audit appends with three writers. Figures in bench/RESULTS.md. Needs PostgreSQL and Redis on loopback
# (.ci/run starts them).
soak: setup haproxy
	$(PY) -m bench.soak
	$(PY) -m bench.scaleout

clean:
	rm -rf .var .demo
