# Interlock: every target creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint system-deps k8s-schemas unit integration fuzz bench soak bench-spike eval-routing eval-pool protos clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@# xds-protos ships an older copy of opentelemetry-proto's modules in the same place: theirs must win
	$(PY) -m pip install -q --force-reinstall --no-deps "opentelemetry-proto==$$($(PY) -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')"
	@touch $(STAMP)

## run: start the gateway (Envoy + ext_proc workers + simulated providers) with the demo config
run: $(STAMP)
	$(VENV)/bin/interlock run

## test: lint, types and every test (unit, golden, component, integration through the real Envoy)
test: lint system-deps k8s-schemas
	$(PY) -m pytest -q -p no:cacheprovider

## system-deps: Debian packages the tests start as real components (redis-server, prometheus, dnsmasq)
system-deps:
	@command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server >/dev/null)
	@command -v prometheus >/dev/null || (apt-get update -qq && apt-get install -y -qq prometheus >/dev/null)
	@command -v dnsmasq >/dev/null || (apt-get update -qq && apt-get install -y -qq dnsmasq-base >/dev/null)

## k8s-schemas: the custom resources' published schemas (npm @kubernetes-models/*) for tests/k8s
K8S_SCHEMAS := $(VENV)/k8s-schemas/.installed-stamp
k8s-schemas: $(K8S_SCHEMAS)
$(K8S_SCHEMAS):
	@mkdir -p $(VENV)/k8s-schemas
	npm install --no-audit --no-fund --silent --prefix $(VENV)/k8s-schemas @kubernetes-models/prometheus-operator@6.0.0 \
		@kubernetes-models/istio@3.0.1 @kubernetes-models/envoy-gateway@2.0.0
	@touch $@

## lint: ruff, mypy and the architecture rules (import-linter contracts in pyproject.toml)
lint: $(STAMP)
	$(VENV)/bin/ruff check extproc routing simulator tests bench
	$(VENV)/bin/mypy extproc routing
	$(VENV)/bin/lint-imports

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit tests/golden

integration: $(STAMP)
	$(PY) -m pytest -q tests/integration

## fuzz: the fuzz campaign through the real Envoy (tests/fuzz, profile "campaign"): ~9 minutes of
## examples from a random seed, printed before and after; `make fuzz SEED=n` replays a campaign
fuzz: $(STAMP)
	@seed=$${SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}; \
	echo "fuzz campaign: seed $$seed (replay: make fuzz SEED=$$seed)"; \
	HYPOTHESIS_PROFILE=campaign timeout -s INT 720 $(PY) -m pytest -q -p no:cacheprovider tests/fuzz \
		--hypothesis-seed=$$seed; rc=$$?; \
	echo "fuzz campaign: seed $$seed (replay: make fuzz SEED=$$seed)"; exit $$rc

## bench: routing decision and rate-limit decision micro-benchmarks, then the loopback load test (wrk from Debian),
## plain Envoy vs Interlock in the same run (non-streamed at 1/16/32/64 connections, with and
## without rate limits; paced streams: time to first event, gaps, CPU per event; fill-in-the-middle),
## Interlock with metrics and tracing on vs off; the `bench:` line last (~7 minutes)
bench: $(STAMP)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	$(PY) bench/bench_routing.py
	$(PY) bench/bench_ratelimit.py
	$(PY) bench/bench.py

## soak: 30 minutes of mixed load through the gateway (MINUTES=N to shorten); RSS of every process
## start/end/max and its drift, RSS per 1,000 open streams. Not part of `make test`
soak: $(STAMP)
	$(PY) bench/soak.py --minutes $(or $(MINUTES),30)

## bench-spike: a burst of 10x the provider's sustainable rate through the gateway (~40 s); prints
## provider peak vs limit, interactive p99 TTFT ratio, batch 429s, hung requests, recovery time
bench-spike: $(STAMP)
	$(PY) bench/bench_spike.py

## eval-routing: trace-driven routing evaluation through the running gateway (several minutes)
eval-routing: $(STAMP)
	$(PY) bench/eval_routing.py

## eval-pool: self-hosted pool evaluation through the running gateway, 4 simulated model servers
## (load-aware vs round robin, spillover vs none, the capacity plan replayed; <= 15 minutes)
eval-pool: $(STAMP)
	$(PY) bench/eval_pool.py

## protos: regenerate extproc/pb from protos/ (tests/unit/protos fails when they differ)
PROTOS := $(shell cd protos && find . -name '*.proto' | sed 's|^\./||' | sort)
protos: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=extproc/pb --pyi_out=extproc/pb $(addprefix protos/,$(PROTOS))

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
