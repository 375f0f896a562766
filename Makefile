# opengen: the two front-door commands are `make lab` and `make test` (see README.md).
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3
# Tests and CI read the data from ../shared/data when it sits beside the clone.
ifeq ($(origin OPENGEN_DATA), undefined)
  ifneq ($(wildcard ../shared/data/MNIST/raw),)
    export OPENGEN_DATA := $(abspath ../shared/data)
  endif
endif

.PHONY: install lab test test-nbs test-py test-slow export clean readme docs docs-serve student nbgrader test-student execute

# Install (once) into $(VENV); reinstalls only when the package definition changes (tools/install.sh: uv, else pip).
$(VENV)/.installed: setup.py settings.ini tools/install.sh
	PYTHON=$(PYTHON) bash tools/install.sh $(VENV)
	touch $@

install: $(VENV)/.installed

lab: install
	$(BIN)/jupyter lab nbs/

# Both stages use every core: as many notebooks at a time as cores, one pytest-xdist worker more (one torch thread each).
NPROC := $(shell nproc 2>/dev/null || echo 2)

# `make test` (tools/test.sh): the install, then every notebook once on every core (a chapter with exercises runs as its
# test edition: each teacher's solution must pass its check, then the student's stub must report "not done", and the rest
# of the chapter runs on the stubs; tools/test_notebooks.py), then pytest on every core; the stage timings at the end.
test:
	MAKE="$(MAKE)" BIN="$(BIN)" NPROC=$(NPROC) bash tools/test.sh

test-nbs: install
	OMP_NUM_THREADS=1 $(BIN)/python tools/test_notebooks.py --workers $(NPROC)

# The student edition (not committed): every solution becomes a stub, in student/.
student: install
	$(BIN)/python tools/build_student.py

# The nbgrader edition (not committed): solutions kept, answers hidden, each test cell check(..., require='passed'), in nbgrader-source/.
nbgrader: install
	$(BIN)/python tools/build_student.py --nbgrader

# The student edition alone, as handed out (student/EXERCISES lists its chapters with exercises), top to bottom: each
# exercise reports "not done". `make test` proves the same in its notebook stage, without running the chapters twice.
test-student: student
	for nb in $$(cat student/EXERCISES); do OPENGEN_EXERCISES=student OMP_NUM_THREADS=1 $(BIN)/nbdev_test --path student/$$nb || exit 1; done

test-py: install
	$(BIN)/pytest -q -n $$(( $(NPROC) + 1 )) --dist loadgroup --durations=15 tests

# The card figures whose sampling takes minutes (e.g. the 250-step DDPM row of the steps study), re-measured.
test-slow: install
	$(BIN)/pytest -q -m slow tests

export: install
	$(BIN)/nbdev_export

clean: install
	$(BIN)/nbdev_clean

# Execute notebooks top to bottom at full size, in place, then clean them: `make execute NBS="nbs/11_vae.ipynb nbs/40_compare.ipynb"`.
# The kernel keeps Jupyter's inline backend (MPLBACKEND is unset: with Agg the figures would not be saved in the notebook).
execute: install
	@test -n "$(NBS)" || { echo 'name the notebooks: make execute NBS="nbs/11_vae.ipynb ..."'; exit 2; }
	for nb in $(NBS); do echo "== $$nb"; t0=$$(date +%s); \
	  env -u MPLBACKEND -u IN_TEST OPENGEN_SIZE=full $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=-1 --ExecutePreprocessor.kernel_name=python3 $$nb || exit 1; \
	  echo "== $$nb: $$(( $$(date +%s) - t0 )) s"; done
	$(BIN)/nbdev_clean

readme: install
	$(BIN)/jupyter nbconvert --to markdown --TemplateExporter.exclude_output=True --stdout nbs/index.ipynb 2>/dev/null > README.md

# The course website, offline: nbdev's processing of nbs/ then mkdocs-material (see tools/build_docs.py), into _site/.
docs: install
	$(BIN)/python tools/build_docs.py --site _site

# Serve the built site on http://127.0.0.1:8000 (Ctrl-C stops it).
docs-serve: docs
	$(BIN)/python -m http.server --bind 127.0.0.1 --directory _site 8000
