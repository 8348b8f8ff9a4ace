# Everything a target needs is installed by the target itself (into .venv): `make run` the
# package and its demo MCP server, every other target the test, lint, Kubernetes and docs
# tools as well.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INPUTS := $(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)
RUN_STAMP := $(VENV)/.run-$(INPUTS)
DEV_STAMP := $(VENV)/.dev-$(INPUTS)
CONFIG ?= examples/demo.yaml
# The request path compiled with mypyc (tools/compile.py), rebuilt when a source changes;
# the package runs its sources whenever the build does not match them.
COMPILED := extproc/_compiled/manifest.json
SOURCES := $(shell find extproc -name '*.py')

.PHONY: install compiled system-packages run test unit lint typecheck proto docs envoy-configs bench bench-transport bench-exchange bench-peers bench-streams bench-large soak clean
# Debian packages are installed with apt-get, through sudo when not root.
APT := $(shell [ "$$(id -u)" = 0 ] || echo sudo) apt-get
PIP := $(BIN)/python -m pip install --quiet --constraint constraints.txt

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) --editable '.[demo]'
	rm -f $(VENV)/.run-*
	touch $@

# The dev install holds the run install too.
$(DEV_STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) --editable '.[dev]'
	rm -f $(VENV)/.run-* $(VENV)/.dev-*
	touch $(RUN_STAMP) $@

install: $(DEV_STAMP)

$(COMPILED): $(SOURCES) tools/compile.py | $(DEV_STAMP)
	$(BIN)/python tools/compile.py

## The request path compiled with mypyc into extproc/_compiled (a few minutes): the suite
## and the benchmarks build it first; `make run` runs it when it is current.
compiled: $(COMPILED)

## Envoy + ext_proc + the mock provider on loopback with the demo config (Ctrl-C stops all).
run: $(RUN_STAMP)
	$(BIN)/extproc up $(CONFIG)

## Debian packages the suite needs: redis-server for the shared budget store; Go and
## grpc-go to build a health client on the gRPC implementation kubelet's probes use.
system-packages:
	command -v redis-server >/dev/null || ($(APT) update -qq && $(APT) install -y -qq redis-server >/dev/null)
	(command -v go >/dev/null && test -d /usr/share/gocode/src/google.golang.org/grpc) || \
	  ($(APT) update -qq && $(APT) install -y -qq golang-go golang-google-grpc-dev >/dev/null)

## The whole suite: lint, types, unit, service and integration tests (real Envoy, Redis),
## and the docs site's strict build (a broken link or a stale config reference fails it).
test: $(DEV_STAMP) system-packages lint typecheck $(COMPILED)
	$(BIN)/pytest -q

unit: $(DEV_STAMP) $(COMPILED)
	$(BIN)/pytest -q tests/unit

## Style, format, and the package's layers (import contracts in pyproject.toml).
lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(DEV_STAMP)
	$(BIN)/mypy
	$(BIN)/mypy --explicit-package-bases bench

## Regenerate extproc/config/v1 from proto/ (a test fails when this is stale).
proto: $(DEV_STAMP)
	$(BIN)/python tools/gen_proto.py

## The documentation site: the config reference from the schema's comments, then docs/ built
## into site/ with --strict (a broken link or a page missing from the nav fails it).
docs: $(DEV_STAMP)
	$(BIN)/python tools/gen_config_docs.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

## Re-render the shipped Envoy configs under envoy/ (a test fails when they are stale).
envoy-configs: $(RUN_STAMP)
	$(BIN)/extproc render-envoy examples/demo.yaml -o envoy/demo.yaml
	$(BIN)/extproc render-envoy examples/sidecar.yaml -o envoy/sidecar.yaml

## Envoy alone vs Envoy + service, 1 KB and 16 KB chat requests (installs wrk if missing);
## then the Responses and Anthropic Messages front doors beside Chat Completions, an MCP
## tools/call through the gateway beside the same call straight to the server, 400 KB
## prompts and a fixed 3,000 requests/s; each part ends with its performance targets.
bench: $(DEV_STAMP) $(COMPILED)
	command -v wrk >/dev/null || ($(APT) update -qq && $(APT) install -y -qq wrk >/dev/null)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/responses.py
	$(BIN)/python bench/mcp.py
	$(BIN)/python bench/large_prompts.py
	$(BIN)/python bench/fixed_rate.py

## The ext_proc transport alone: server CPU per message from raw HTTP/2 frames, no Envoy;
## then large messages echoed in process (CPU, peak memory).
bench-transport: $(DEV_STAMP) $(COMPILED)
	$(BIN)/python bench/transport.py
	$(BIN)/python bench/large_messages.py

## The exchange alone: CPU per whole request in-process (no transport, no Envoy); then a
## whole 1 KB request's and a streamed chunk's way through the service (frames in, replies
## out), each beside the bare transport's.
bench-exchange: $(DEV_STAMP) $(COMPILED)
	$(BIN)/python bench/exchange.py
	$(BIN)/python bench/service_cpu.py
	$(BIN)/python bench/chunks.py

## The same load on LiteLLM proxy, the Portkey gateway and the MLflow AI Gateway (installed
## under .bench/), with ratios.
bench-peers: $(DEV_STAMP) $(COMPILED)
	command -v wrk >/dev/null || ($(APT) update -qq && $(APT) install -y -qq wrk >/dev/null)
	command -v npm >/dev/null || ($(APT) update -qq && $(APT) install -y -qq nodejs npm >/dev/null)
	$(BIN)/python bench/peers.py

## Service memory over 1.25 M ext_proc streams (STREAMS_TOTAL) of the full pipeline, with wrk.
bench-streams: $(DEV_STAMP) $(COMPILED)
	command -v wrk >/dev/null || ($(APT) update -qq && $(APT) install -y -qq wrk >/dev/null)
	$(BIN)/python bench/streams.py

## Memory and CPU of request bodies at the default limit (~30 MB of images, 1/2/4 at once),
## the per-body cost of request validation, and the policies' reading of a long prompt.
bench-large: $(DEV_STAMP) $(COMPILED)
	$(BIN)/python bench/large_bodies.py
	$(BIN)/python bench/validation.py
	$(BIN)/python bench/request_path.py
	$(BIN)/python bench/long_texts.py

## Minutes of mixed traffic (SOAK_SECONDS, default 180): outcomes, memory, and whether the
## records, the provider's counts and the Redis budget agree (exit 1 when they do not).
soak: $(DEV_STAMP) system-packages $(COMPILED)
	$(BIN)/python bench/soak.py

clean:
	rm -rf $(VENV) extproc/_compiled .bench .pytest_cache .mypy_cache .ruff_cache .import_linter_cache *.egg-info site
