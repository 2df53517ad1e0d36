# ha-celery: `make demo` runs the local failure drill, `make test` the whole suite.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.8
STACK ?= dev
TASKS ?= 10000
SCENARIO ?= kill-broker
WORKLOAD ?= plain
CONFIG ?= ha
BASE ?= HEAD
# SCENARIO=update: the settings of the second plan (UPDATE="brokerMemoryMiB=1536"), and the steps to it
# (plan-diff's, unless STEPS names a file); LONG_TASK_S: WORKLOAD=long's task durations, MIN-MAX seconds;
# LANE: the worker lane a drill loads and faults (default: long for WORKLOAD=long, else default).
UPDATE ?=
STEPS ?=
LONG_TASK_S ?= 60-180
UPDATE_PLAN := build/plan-update
# TLS=1: plan (and so demo) with brokerTls=true, TLS=0 with false; unset: the stack's own setting.
TLS_SET := $(if $(filter 1,$(TLS)),brokerTls=true,)$(if $(filter 0,$(TLS)),brokerTls=false,)
ifneq ($(strip $(filter-out 0 1,$(TLS))),)
$(error TLS=$(TLS): allowed TLS=1 (brokerTls=true), TLS=0 (brokerTls=false) or unset (the stack's own setting))
endif
# NOISY=1: make bench rewrites BENCHMARKS.md even when the machine was busy at start (the table then says so).
ifneq ($(strip $(filter-out 0 1,$(NOISY))),)
$(error NOISY=$(NOISY): allowed NOISY=1 (rewrite BENCHMARKS.md even on a busy machine), NOISY=0 or unset (refuse on a busy machine))
endif
# One heavy run at a time on a machine: anything that boots brokers waits for the machine's lock.
# A caller that already holds it (HA_CELERY_HEAVY_HELD=1) is not made to wait for itself.
HEAVY_LOCK := /tmp/ha-celery-heavy.lock
HEAVY := $(if $(HA_CELERY_HEAVY_HELD),,flock $(HEAVY_LOCK) env HA_CELERY_HEAVY_HELD=1)

.PHONY: help setup system-deps images plan plan-diff plan-update test lint typecheck contracts unit integration demo bench lock clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# --- set-up (idempotent: every target below depends on it) -------------------
system-deps: ## apt packages: rabbitmq-server (local broker), iproute2 (network namespaces), nftables (the pods' NetworkPolicy rules), mmdebstrap + zstd (images), prometheus (promtool, the drills' Prometheus), dnsmasq-base (the pod runner's cluster DNS)
	@if ! command -v rabbitmq-server >/dev/null || ! command -v ip >/dev/null || ! command -v nft >/dev/null \
	    || ! command -v mmdebstrap >/dev/null || ! command -v zstd >/dev/null || ! command -v promtool >/dev/null \
	    || ! command -v dnsmasq >/dev/null; then \
	  had_broker=$$(command -v rabbitmq-server || true); had_prometheus=$$(command -v promtool || true); \
	  echo "installing rabbitmq-server, iproute2, nftables, mmdebstrap, zstd, prometheus and dnsmasq-base with apt"; \
	  $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq \
	    rabbitmq-server iproute2 nftables mmdebstrap zstd prometheus dnsmasq-base >/dev/null; \
	  if [ -z "$$had_broker" ]; then \
	    echo "stopping the system broker the package just started (the harness runs its own nodes)"; \
	    { systemctl stop rabbitmq-server || service rabbitmq-server stop || rabbitmqctl -q shutdown; } >/dev/null 2>&1 || true; \
	  fi; \
	  if [ -z "$$had_prometheus" ]; then \
	    { systemctl stop prometheus prometheus-node-exporter || service prometheus stop; } >/dev/null 2>&1 || true; \
	  fi; \
	fi

$(VENV)/.synced: pyproject.toml uv.lock
	@command -v uv >/dev/null || python3 -m pip install -q "uv==$(UV_VERSION)"
	uv sync --frozen --quiet
	@touch $@

# The two images of the plan as local root filesystems (harness/runtime/images.py): built once (~35 s, root), then reused
# from /var/cache/ha-celery/rootfs in milliseconds; fails naming both versions if the pinned rabbitmq-server moved.
images: system-deps $(VENV)/.synced ## build or reuse the local rabbitmq and worker images
	$(if $(filter 0,$(shell id -u)),,sudo) $(PY) -m harness.runtime.images

setup: system-deps $(VENV)/.synced images ## install everything (apt packages, the locked virtualenv, the images)

lock: ## re-resolve uv.lock and regenerate app/requirements.txt for the worker image
	uv lock
	uv export --frozen --only-group app --no-header --no-annotate -o app/requirements.txt --quiet

# --- the cloud program, offline ----------------------------------------------
plan: $(VENV)/.synced ## offline plan of STACK (default dev) under Pulumi mocks -> build/plan/STACK (SET="key=value ...", TLS=1|0)
	$(PY) -m plan --stack $(STACK) $(foreach kv,$(SET) $(TLS_SET),--set $(kv))

# Exit 0: nothing stateful replaced or deleted (or ALLOW names it); 1: a StatefulSet, StorageClass, PVC, GKE
# cluster, node pool or registry would be replaced or deleted; 2: bad input (ref, stack, SET, REPLACE, ALLOW).
# REPLACE and ALLOW take type::name (a URN's tail, as `pulumi up --replace <urn>` names one resource), or a
# bare name only one resource has: a shared one (rabbitmq-erlang-cookie, ha-celery-dev) exits 2 listing both.
plan-diff: $(VENV)/.synced ## steps of `pulumi up` from BASE (git ref, default HEAD) to this tree -> build/plan-diff/steps.json (SET=, REPLACE="type::name ...", ALLOW="type::name ...")
	$(PY) -m plan.diff_cli --base $(BASE) --stack $(STACK) $(foreach kv,$(SET) $(TLS_SET),--set $(kv)) \
	  $(foreach kv,$(BASE_SET),--base-set $(kv)) $(foreach n,$(REPLACE),--replace $(n)) $(foreach n,$(ALLOW),--allow $(n))

# The second plan of SCENARIO=update, and the steps from the first to it: plan-diff's (STEPS= overrides).
# The booted plan's own SET and TLS are both sides' (BASE_SET); UPDATE and REPLACE make the difference.
plan-update: $(VENV)/.synced
	@[ -n "$(UPDATE)$(REPLACE)" ] || { echo 'SCENARIO=update needs UPDATE="key=value ..." and/or REPLACE="type::name ..."'; exit 2; }
	$(PY) -m plan --stack $(STACK) --out $(UPDATE_PLAN) $(foreach kv,$(SET) $(TLS_SET) $(UPDATE),--set $(kv)) \
	  $(foreach n,$(REPLACE),--replace $(n))
	@if [ -z "$(STEPS)" ]; then \
	  $(MAKE) --no-print-directory plan-diff BASE=HEAD BASE_SET="$(SET) $(TLS_SET)" SET="$(UPDATE)" TLS= REPLACE="$(REPLACE)"; \
	fi

# --- quality gates -------------------------------------------------------------
lint: $(VENV)/.synced
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.synced
	$(VENV)/bin/mypy .

contracts: $(VENV)/.synced
	$(VENV)/bin/lint-imports

unit: $(VENV)/.synced ## tests/unit: no broker, no root, no tool beyond the virtualenv (mocks, renderers, settings)
	$(VENV)/bin/pytest -q tests/unit

integration: setup ## tests/integration: real RabbitMQ nodes, the images, promtool, the policy pack's server
	$(HEAVY) $(VENV)/bin/pytest -q --durations=10 tests/integration

# Two lanes at once. The brokers' tiers (integration, drills) under the machine's lock; beside them the
# CPU-only gates and unit tier at the lowest priority (nice 19: a contended core gives them ~1.5 %), so
# they use only the CPU the brokers leave idle and the drills' timing stays as it was alone. The light
# lane's output follows the heavy one's (and is in build/test-light.log); either failing fails the run.
test: setup ## everything: gates, unit, integration (real RabbitMQ) and drills
	@mkdir -p build; \
	( nice -n 19 $(MAKE) --no-print-directory lint typecheck contracts \
	  && nice -n 19 $(VENV)/bin/pytest -q -p no:cacheprovider --durations=10 tests/unit ) >build/test-light.log 2>&1 & \
	light=$$!; \
	$(HEAVY) $(VENV)/bin/pytest -q --durations=25 tests/integration tests/drills; heavy=$$?; \
	wait $$light; light_status=$$?; \
	echo "--- gates and tests/unit (beside the above, nice 19): exit $$light_status"; cat build/test-light.log; \
	[ $$heavy -eq 0 ] && [ $$light_status -eq 0 ]

# --- the local harness -----------------------------------------------------------
demo: setup plan $(if $(filter update,$(SCENARIO)),plan-update) ## the plan of STACK booted on the local pod runner, one failure drill (TASKS=, SCENARIO=, WORKLOAD=plain|eta|long, LANE=default|long, CONFIG=ha|seed, TLS=1; SCENARIO=update UPDATE="key=value ...")
	$(HEAVY) $(PY) -m drill run --tasks $(TASKS) --scenario $(SCENARIO) --workload $(WORKLOAD) --config $(CONFIG) --plan build/plan/$(STACK) \
	  --long-task-s $(LONG_TASK_S) $(if $(LANE),--lane $(LANE)) $(if $(filter update,$(SCENARIO)),--update-plan $(UPDATE_PLAN)/$(STACK) --steps $(or $(STEPS),build/plan-diff/steps.json) --update-set "$(UPDATE)$(if $(REPLACE), $(foreach n,$(REPLACE),REPLACE=$(n)))")

bench: setup plan ## the plan of STACK (4.3) vs the seed (3.10) -> build/bench/results.json, and BENCHMARKS.md if a full run started idle: load <= 0.5 x cores (QUICK=1: short run; SCALE=1M: scale only; NOISY=1: BENCHMARKS.md even when busy, marked so)
	$(HEAVY) $(PY) -m bench --plan build/plan/$(STACK) $(if $(QUICK),--quick,) $(if $(SCALE),--scale $(SCALE),) $(if $(filter 1,$(NOISY)),--noisy,)

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
