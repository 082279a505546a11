# dip-inpainting: make setup && make test; then make reproduce (full scale on a GPU), make lab.
PY      := .venv/bin/python
TORCH   ?= torch==2.13.0
SHARED  := $(abspath ../shared/data)
# tests and CI use the shared folder as a local mirror of the public files when it exists
export DIP_DATA_MIRROR ?= $(if $(wildcard $(SHARED)/MANIFEST.tsv),$(SHARED),)
# make reproduce WORKERS=N (N local Dask workers; 1 = one run after another) or SCHEDULER=tcp://host:port
WORKERS ?=
SCHEDULER ?=
# make report RESULTS=DIR (or make reproduce RESULTS=DIR): another results store than results/
RESULTS ?=
PROFILE ?= $(shell $(PY) -c "import torch; print('paper' if torch.cuda.is_available() else 'quick')" 2>/dev/null || echo quick)

.PHONY: setup test bench reproduce report lab clean

setup:
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[all]"

# unit tests, the notebooks in the smoke profile, then nbval: the committed quick report must
# regenerate its tables identically from the committed results
test: export DIP_DATA_DIR ?= $(CURDIR)/.cache/data
test:
	$(PY) -m ruff check dip_lib tests notebooks
	$(PY) -m ruff format --check dip_lib tests notebooks
	$(PY) -m pytest -q
	@if ls report/quick/*.ipynb >/dev/null 2>&1; then \
	  $(PY) -m pytest -q -p no:cacheprovider --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg report/quick/*.ipynb; \
	else echo "no report/quick yet: nbval skipped"; fi

bench:
	$(PY) -m dip_lib bench --out results/bench-$(shell hostname)-cpu.json

reproduce:
	$(PY) -m dip_lib report --profile $(PROFILE) --execute $(if $(WORKERS),--workers $(WORKERS)) \
	  $(if $(SCHEDULER),--scheduler $(SCHEDULER)) $(if $(RESULTS),--results-dir $(RESULTS))

report:
	$(PY) -m dip_lib report --profile $(PROFILE) $(if $(RESULTS),--results-dir $(RESULTS))

lab:
	.venv/bin/jupyter lab notebooks/

clean:
	rm -rf .cache report/smoke results/smoke
