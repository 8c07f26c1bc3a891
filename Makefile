# The two commands of the README. Both install what they need first (scripts/install.sh).
PY := $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV)/bin/python,$(if $(CONDA_PREFIX),$(CONDA_PREFIX)/bin/python,.venv/bin/python))

.PHONY: quick test install repro-check

# Install, run the quick matrix on the embedded default dataset (MovieLens 100K; three seeds,
# two worker processes of one torch thread each), write the tables to results/quick/.
quick:
	scripts/install.sh
	$(PY) -m benchmarks.cli run --preset quick --jobs 2 --output results/quick

# Run the quick matrix afresh (empty cache, temporary folder) and compare its results with the
# committed results/quick to 4 decimals; lists the values that differ, exit status 1 if any do.
repro-check:
	scripts/install.sh
	$(PY) -m benchmarks.repro_check --preset quick --jobs 2 --against results/quick

# Install with the test extra and run the whole test suite.
test:
	scripts/install.sh dev
	$(PY) -m pytest -q

install:
	scripts/install.sh dev
