# chatmq: `make run` starts the whole stack on embedded defaults, `make test` runs the test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
WEB_STAMP := web/node_modules/.installed-stamp
ARGS   ?=

.PHONY: install web web-test screenshots run test test-slow lint bench clean

$(STAMP): setup.cfg pyproject.toml
	@echo "==> creating $(VENV) and installing chatmq with its test tools"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[server,test]'
	@touch $(STAMP)

install: $(STAMP)
	@scripts/ensure-deps

# The web app (web/): its npm packages exactly as web/package-lock.json pins them, then the
# no-bundler build into web/dist (copies, a few ms), which `chatmq up` and `chatmq api` serve at /app/.
$(WEB_STAMP): web/package.json web/package-lock.json
	@echo "==> installing the web app's npm packages (npm ci)"
	cd web && npm ci --no-audit --no-fund --loglevel=error
	@touch $(WEB_STAMP)

web: install $(WEB_STAMP)
	@cd web && node build.js

# The JS library's unit tests (node's test runner).
web-test: web
	cd web && node --test test/*.test.js

# The README's pictures of the web app, taken by the browser tests.
screenshots: web
	$(BIN)/pytest -q tests/web/test_browser.py -k "two_users_chat or phone_sized"
	cp build/screenshots/web-app.png build/screenshots/web-app-phone.png docs/img/

run: install web
	$(BIN)/chatmq up $(ARGS)

# The suite to run after every change; the minutes-long suites (browsers, the Mosquitto
# interoperability suite, RabbitMQ nodes and clusters: marked slow, tests/conftest.py) are
# `make test-slow`. CI (.ci/run) runs both.
test: install web-test
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest -m "not slow" $(ARGS)

test-slow: install web
	$(BIN)/pytest -m slow $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

bench: install
	$(BIN)/pip install --quiet -e '.[server,bench]'
	$(BIN)/python -m bench.run $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache web/node_modules web/dist
