# medrepro: `make demo` runs the embedded demo, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all

.PHONY: install demo test test-slurm lint bench clean help

help:
	@echo "make demo   - set up $(VENV) (uv or pip, pinned) and run the workflow on the embedded demo config"
	@echo "make install EXTRAS=slurm,download - the package and the extras named into $(VENV) (INSTALLER=pip for pip alone)"
	@echo "make test   - the test suite, snakemake --lint and ruff"
	@echo "make test-slurm - the full-settings smoke run on a real local SLURM (root, Debian's slurm packages)"
	@echo "make bench  - the benchmarks in bench/"
	@echo "make clean  - remove results/ and .snakemake/ (keeps $(VENV))"

# The installer: uv (pinned, itself installed by the venv's pip) downloads in parallel and compiles
# the bytecode on every core, a fresh install in about half of pip's time (bench/README.md,
# "Demo duration"); where it cannot install (uv reads UV_DEFAULT_INDEX / UV_INDEX_URL, not pip.conf,
# so a mirror that only pip.conf names is not its), pip installs the same pins instead.
# INSTALLER=pip uses pip alone. Both compile the bytecode, so no job compiles a module at import.
INSTALLER ?= uv
UV_VERSION ?= 0.13.10
define install
	@if [ "$(INSTALLER)" = uv ] \
	    && $(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)" \
	    && $(BIN)/python -m uv pip install --quiet --python $(BIN)/python --compile-bytecode -c constraints.txt $(1); then \
	  echo "installed with uv $(UV_VERSION): $(1)"; \
	else \
	  if [ "$(INSTALLER)" = uv ]; then echo "uv could not install $(1); installing it with pip instead" >&2; fi; \
	  $(BIN)/python -m pip install --quiet --upgrade "pip>=24" \
	  && $(BIN)/python -m pip install --quiet -c constraints.txt $(1) \
	  && echo "installed with pip: $(1)"; \
	fi
endef

# constraints.txt pins every package, direct and indirect, of the package and all its extras
# (tests/test_project.py checks it against the installed closure); the demo needs
# the package alone, the tests and benchmarks add the [test] and [download] extras;
# `make install EXTRAS=slurm,download` adds others with the same installer
$(BIN)/.medrepro-installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(call install,-e .)
	touch $@

# (a spec with a comma goes to $(call) in a variable: make would split it there)
TEST_SPEC := -e ".[test,download]"
$(BIN)/.medrepro-test-installed: $(BIN)/.medrepro-installed
	$(call install,$(TEST_SPEC))
	touch $@

EXTRAS ?=
SPEC ?= -e "$(if $(EXTRAS),.[$(EXTRAS)],.)"
install:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(call install,$(SPEC))

demo: $(BIN)/.medrepro-installed
	$(BIN)/snakemake --cores $(CORES)
	@echo
	@echo "Done. Results are in results/:"
	@echo "  results/html/index.html             the report in a browser: every table and figure, captioned"
	@echo "                                      ($(BIN)/medrepro report opens it)"
	@echo "  results/report.md                   published vs reproduced, every paper"
	@echo "  results/papers/<paper>/             tables (CSV, Markdown, LaTeX) and figures (PNG, PDF)"
	@echo "  results/figures/contact_sheets/     a look at each dataset"
	@echo "  results/audit/, results/leakage/    the published tables' arithmetic; shared patients and images"
	@echo "  results/manifests/, results/converted/   manifests and what was rejected"

lint: $(BIN)/.medrepro-test-installed
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/ruff check src tests bench workflow/scripts

test: $(BIN)/.medrepro-test-installed lint
	$(BIN)/python -m pytest

# config/full.yaml + config/smoke.yaml through profiles/slurm on a single-node SLURM started by
# the test (20 minutes on an idle 2-core AVX-512 machine: the papers' real models and heads, every job once)
test-slurm: $(BIN)/.medrepro-test-installed
	$(BIN)/python -m pytest -m slurm -p no:cacheprovider

bench: $(BIN)/.medrepro-test-installed
	$(BIN)/python bench/convert.py
	$(BIN)/python bench/loader.py
	$(BIN)/python bench/cpu_training.py
	$(BIN)/python bench/maskrcnn.py
	$(BIN)/python bench/dag.py
	$(BIN)/python bench/scale.py

clean:
	rm -rf results .snakemake
