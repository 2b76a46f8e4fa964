# The two commands of the README. Each installs what it needs into .venv first.
#   make reproduce   run every notebook headless (profile: PROFILE=smoke|default|paper) + report
#   make test        run the test suite
PROFILE ?= default
OUT ?= runs/$(PROFILE)
VENV ?= .venv
JOBS ?= auto

.PHONY: reproduce test bench env clean
env:
	@bash scripts/bootstrap.sh

reproduce: env
	$(VENV)/bin/xnn reproduce --profile $(PROFILE) --out $(OUT) --resume --jobs $(JOBS)

test: env
	XNN_QUIET=1 MPLBACKEND=Agg $(VENV)/bin/python -m pytest -q

bench: env
	$(VENV)/bin/xnn bench

clean:
	rm -rf runs .pytest_cache
