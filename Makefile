# DicomKeep: `make run` serves all-in-one; `make test` runs every test.
# Both install what they need first (Python 3.11 and make are all a machine needs).

PYTHON ?= python3.11
UV_VERSION ?= 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
CONFIG ?=
PYTEST_ARGS ?= -n 2 --dist loadfile --durations=25

.PHONY: install install-runtime run test test-unit test-integration test-large test-faults test-fuzz lint test-deps services cluster cluster-stop bench bench-quick clean

PROJECT_FILES := pyproject.toml uv.lock libs/common/pyproject.toml $(wildcard services/*/pyproject.toml)
# uv installs into $(VENV) (make run VENV=... to put it elsewhere).
SYNC := UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --all-packages --frozen --python $(PYTHON)

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet "uv==$(UV_VERSION)"

# Everything, the dev group too (test servers, linters, validators): for the tests.
$(VENV)/.installed: $(UV) $(PROJECT_FILES)
	$(SYNC)
	touch $@

# What runs, and nothing else (no dev group). --inexact: a dev install stays as it is.
$(VENV)/.runtime: $(UV) $(PROJECT_FILES)
	$(SYNC) --no-dev --inexact
	touch $@

install: $(VENV)/.installed

install-runtime: $(VENV)/.runtime

run: install-runtime
	$(VENV)/bin/dicomkeep serve $(CONFIG)

# DCMTK gives the real DICOM peers the tests use; the backends must be up.
test-deps:
	@scripts/test-deps.sh

services:
	@scripts/ensure-services.sh

test: install test-deps services
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-unit: install
	$(VENV)/bin/python -m pytest -m "not integration" $(PYTEST_ARGS)

test-integration: install test-deps services
	$(VENV)/bin/python -m pytest -m integration $(PYTEST_ARGS)

# Issue 15's bar, in full: a 1 GiB POST /instances and its download in both modes, the
# server's memory sampled (under 200 MB above idle). `make test` runs the same test
# with 200 MiB; this one takes a few minutes and ~3 GB of disk in TMPDIR.
test-large: install test-deps services
	LARGE_UPLOAD_MB=1024 $(VENV)/bin/python -m pytest tests/integration/test_large_uploads.py -s -q --timeout 1800

# The fault-injection suite in full (docs/reliability.md): FAULT_INSTANCES instances
# streamed through each fault (kill -9 of every service, cuts of PostgreSQL, RabbitMQ
# and Redis, all-in-one crashes mid-stream, mid-DELETE, mid-recycling). `make test`
# runs its short version (20 instances per fault). Figures: .pytest_cache/d/faults/report.txt
FAULT_INSTANCES ?= 1000
test-faults: install test-deps services
	rm -f .pytest_cache/d/faults/report.txt
	$(VENV)/bin/python -m pytest tests/integration/faults --fault-instances=$(FAULT_INSTANCES) $(PYTEST_ARGS)
	cat .pytest_cache/d/faults/report.txt

# The bad-input suite (issue 15) with many more examples and random seeds, both modes:
# the quick version of the same tests runs in `make test`. See docs/reliability.md.
FUZZ_TESTS := tests/unit/common/test_dicom_fuzz.py tests/integration/test_badinput.py
test-fuzz: install test-deps services
	DICOMKEEP_FUZZ=long $(VENV)/bin/python -m pytest $(FUZZ_TESTS) --timeout 7200 $(FUZZ_ARGS)

lint: install
	$(VENV)/bin/ruff check libs services tests bench
	$(VENV)/bin/mypy libs/common/src services/*/src

# A local distributed deployment (processes) on the local PostgreSQL, RabbitMQ, Redis;
# blobs in .cluster/storage (kept across cluster-stop and cluster), logs in .cluster/.
cluster: install-runtime services
	$(VENV)/bin/dicomkeep cluster start $(CONFIG)

cluster-stop: install-runtime
	$(VENV)/bin/dicomkeep cluster stop

# Benchmarks (not part of the tests): DicomKeep's three modes against Debian's Orthanc in
# the matching three, side by side; installs Orthanc, its PostgreSQL plugin and DCMTK with
# apt-get when missing (needs root). Results in bench/results/; see docs/performance.md.
bench: install test-deps services
	$(VENV)/bin/python -m bench $(BENCH_ARGS)

# A first look: small store, one run, all-in-one against Orthanc/SQLite (under 3 minutes).
bench-quick: install test-deps services
	$(VENV)/bin/python -m bench --quick $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .ruff_cache .mypy_cache
