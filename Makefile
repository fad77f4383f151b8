# medrepro: `make demo` runs the embedded demo, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all

.PHONY: demo test test-slurm lint bench clean help

help:
	@echo "make demo   - set up $(VENV) (pip, pinned) and run the workflow on the embedded demo config"
	@echo "make test   - the test suite, snakemake --lint and ruff"
	@echo "make test-slurm - the full-settings smoke run on a real local SLURM (root, Debian's slurm packages)"
	@echo "make bench  - the benchmarks in bench/"
	@echo "make clean  - remove results/ and .snakemake/ (keeps $(VENV))"

# constraints.txt pins every package, direct and indirect, of the package and all its extras
# (tests/test_project.py checks it against the installed closure); the demo needs
# the package alone, the tests and benchmarks add the [test] and [download] extras
$(BIN)/.medrepro-installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e .
	touch $@

$(BIN)/.medrepro-test-installed: $(BIN)/.medrepro-installed
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,download]"
	touch $@

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
