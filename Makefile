# imagejobs: `make run` starts the whole stack; `make test` passes the tests. Both set up first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The benchmarks' charts need matplotlib, which requires "pillow": pip would install stock Pillow
# over pillow-simd's PIL package (both ship PIL/), and every service would then run on it. So it
# is installed without its dependencies, naming them less pillow; pillow-simd provides PIL.
MATPLOTLIB := matplotlib contourpy cycler fonttools kiwisolver numpy packaging pyparsing python-dateutil six
PLOTTING := $(PY) -c "import matplotlib" 2>/dev/null || $(PY) -m pip install -q --no-deps $(MATPLOTLIB)
REINSTALL_PILLOW_SIMD := $(PY) -m pip install -q --no-cache-dir --force-reinstall --no-deps pillow-simd

.PHONY: setup run test test-unit compose-test demo bench soak soak-load lint docs clean

$(STAMP): pyproject.toml
	bash deploy/install-system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	# pillow-simd compiles against the system's image libraries: rebuild it without pip's cache so
	# a wheel cached before libwebp-dev/libjpeg-dev were installed cannot slip in without them.
	$(REINSTALL_PILLOW_SIMD)
	$(PY) -c "from PIL import features as f; missing = [c for c in ('jpg', 'zlib', 'webp') if not f.check(c)]; assert not missing, f'pillow-simd lacks {missing}: install libjpeg-dev zlib1g-dev libwebp-dev and rerun'"
	touch $(STAMP)

deploy/kafka/lib/.complete: deploy/kafka/pom.xml $(STAMP)
	$(PY) -m deploy.devstack setup

setup: $(STAMP) deploy/kafka/lib/.complete
	@# a venv where an earlier `make bench` let pip put stock Pillow over pillow-simd (above) is mended
	@$(PY) -c "import PIL, importlib.metadata as m; assert PIL.__version__ == m.version('pillow-simd')" 2>/dev/null || \
	  { $(PY) -m pip uninstall -y -q pillow; $(REINSTALL_PILLOW_SIMD); }

run: setup
	$(PY) -m deploy.devstack run

test: setup  # then compose-test, when a Docker engine runs here or can be started
	$(PY) -m pytest -q
	@bash deploy/docker/prepare.sh; rc=$$?; \
	if [ $$rc -eq 0 ]; then $(MAKE) --no-print-directory compose-test; \
	elif [ $$rc -eq 3 ] && [ -z "$$IMAGEJOBS_REQUIRE_DOCKER" ]; then \
	  echo "make test: no Docker engine could be started here, so compose-test did not run (README: Docker)"; \
	else echo "make test: deploy/docker/prepare.sh failed ($$rc)"; exit $$rc; fi

compose-test: setup  # docker-compose.yml built and run for real: jobs, a processor killed, down/up
	bash deploy/docker/prepare.sh
	$(PY) -m pytest -q tests/compose

test-unit: setup
	$(PY) -m pytest -q tests/unit

demo: setup  # with `make run` in another terminal: the example job 5 s ahead, then a failing one
	@ij=$(VENV)/bin/imagejobs; \
	id=$$($$ij submit data/example-job.json --at "$$(date -u -d '+5 seconds' +%FT%TZ)") && \
	$$ij watch $$id && $$ij results $$id && \
	id=$$($$ij submit data/failing-job.json) && { $$ij watch $$id; test $$? -eq 1; }

bench: setup  # the peers (Redis, BullMQ's node_modules, Celery's venv) are set up under .state/peers
	command -v wrk >/dev/null || (apt-get install -y -q wrk || sudo apt-get install -y -q wrk)
	$(PLOTTING)
	bash tests/bench/peers_setup.sh
	$(PY) -m tests.bench.pipeline

soak: setup  # the fault and fuzz suites with many more rounds and examples
	SOAK_ROUNDS=20 FUZZ_EXAMPLES=5000 $(PY) -m pytest -q tests/faults tests/security

soak-load: setup  # 30 minutes of 5x the replaced system's load on the `make run` stack (docs/benchmarks.md)
	$(PLOTTING)
	$(PY) -m tests.bench.soak --minutes 30 --docs

lint: setup
	$(PY) -m ruff check shared services imagejobs_client deploy tools tests

docs: setup  # the published event documents, from shared/events.py (unit tests check they are current)
	$(PY) -m tools.asyncapi
	$(PY) -m tools.schema_doc

clean:
	rm -rf .state
