# Two entry points, each doing the whole set-up on a fresh machine:
#   make demo   build the corpus guests and run the main job on them
#   make test   run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
AFTERBURN = $(VENV)/bin/afterburn
# Parallel test workers (the CI machine has 2 cores).
JOBS   ?= 2

.PHONY: demo test venv guests corpus clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $@

venv: $(VENV)/.installed

guests: venv
	$(MAKE) -s -C corpus/guests BUILD=build/plain
	$(MAKE) -s -C corpus/guests BUILD=build/annotated CC="$(abspath $(AFTERBURN)) cc"

demo: guests
	$(PY) -m afterburn.demo

# The corpus tests need the Debian objects and the Linux source: fetch them
# into ~/.cache (or $AFTERBURN_CORPUS, $AFTERBURN_LINUX) if apt can; without
# them those tests skip (CI: fail).
corpus: venv
	-$(PY) -m corpus.fetch
	-$(PY) -m corpus.linux_src fetch

test: venv corpus
	$(PY) -m pytest -q -n $(JOBS) --dist loadgroup tests

clean:
	rm -rf $(VENV) corpus/guests/build .pytest_cache
