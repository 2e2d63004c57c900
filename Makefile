# The two commands of the README:
#   make demo   run the main job on an embedded default
#   make test   run every test (what CI runs through .ci/run)
SHELL := /bin/bash
RUN := scripts/run

.PHONY: setup demo test lint sanity unit integration molecule benchmarks clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(RUN) bash scripts/demo.sh

test: setup
	$(RUN) bash tests/run_all.sh

lint: setup
	$(RUN) bash tests/run_all.sh lint

sanity: setup
	$(RUN) bash tests/run_all.sh sanity

unit: setup
	$(RUN) bash tests/run_all.sh unit

integration: setup
	$(RUN) bash tests/run_all.sh integration

molecule: setup
	$(RUN) bash tests/run_all.sh molecule

benchmarks: setup
	$(RUN) bash benchmarks/run_all.sh

clean:
	rm -rf .collections tests/output .pytest_cache .ruff_cache
