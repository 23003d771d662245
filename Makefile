# The two quick-start commands of the README, from a clean clone with nothing but Python and make:
#
#   make run    # set up .venv/ if needed, then train: python -m makemore.run $(ARGS)
#   make test   # set up .venv/ if needed, then the whole test suite: pytest $(ARGS)
#
# Set-up: a virtual environment in .venv/ made with $(PYTHON) -m venv, the project installed into it
# editable with its test extra. It is reused while .venv/.installed is newer than pyproject.toml and
# refreshed (pip install again) when pyproject.toml changes. `make clean-venv` removes it.
# Examples: make run ARGS="model.hidden=300"   make test ARGS='-m "not slow"'   make run PYTHON=python3.12

# PYTHON may come from the environment; VENV and ARGS only from make's command line.
PYTHON ?= python3
VENV = .venv
ARGS =

VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help run test setup clean-venv

help:
	@echo "make run  [ARGS='hydra overrides']   set up $(VENV)/ if needed, train (python -m makemore.run)"
	@echo "make test [ARGS='pytest args']       set up $(VENV)/ if needed, run the test suite"
	@echo "make setup                           only set up $(VENV)/ (the project installed editable, with [test])"
	@echo "make clean-venv                      remove $(VENV)/"

run: $(STAMP)
	$(VPY) -m makemore.run $(ARGS)

test: $(STAMP)
	$(VPY) -m pytest $(ARGS)

setup: $(STAMP)

# pyproject.toml pins torch to <2.14 (pip takes the CPU wheel where one is on disk, never a CUDA build by
# accident) and Hydra to <1.4. A venv whose creation failed half-way is removed, so the next make retries.
$(VPY):
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "makemore needs Python >= 3.10, " + sys.version.split()[0] + " is " + sys.executable' \
	  || { echo "set PYTHON to a Python >= 3.10: make $(MAKECMDGOALS) PYTHON=python3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	  echo "$(PYTHON) -m venv failed; on Debian/Ubuntu install the venv module: sudo apt install python3-venv" >&2; exit 1; }

$(STAMP): pyproject.toml | $(VPY)
	$(VPY) -m pip install --disable-pip-version-check -e ".[test]"
	@touch $@

clean-venv:
	rm -rf $(VENV)
