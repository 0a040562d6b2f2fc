#!/usr/bin/env bash
# Run the tests marked `vllm` against real vLLM servers: a forward one (smollm2-135m-instruct) and a reverse one
# (the shipped TRLM-Ba model, merged by `trlm export`), both float32 so that the in-process engine's numbers are
# the reference within float32 tolerance. Both start together (one CPU core each), the tests run, and the servers
# stop on exit (success, failure or Ctrl-C).   Usage: scripts/vllm_test.sh [pytest args]   (make test-vllm)
set -euo pipefail
cd "$(dirname "$0")/.."
FWD_PORT=${FWD_PORT:-8761}
REV_PORT=${REV_PORT:-8762}
LOGS=${VLLM_LOGS:-runs/vllm_test}
mkdir -p "$LOGS"
# create the vLLM venv and the merged reverse model before the servers start, not twice at once
VLLM_VENV=${VLLM_VENV:-.venv-vllm} scripts/vllm_serve.sh --prepare-only smollm2-135m-instruct 0
.venv/bin/trlm export trlm-ba-smol > /dev/null
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
NCPU=$(nproc)
start() {  # model port core
  VLLM_DTYPE=float32 VLLM_THREADS=1 VLLM_BIND="$3" scripts/vllm_serve.sh "$1" "$2" > "$LOGS/$1.log" 2>&1 &
  pids+=($!)
}
start smollm2-135m-instruct "$FWD_PORT" 0
start trlm-ba-smol "$REV_PORT" $((NCPU > 1 ? 1 : 0))
for port in "$FWD_PORT" "$REV_PORT"; do
  for i in $(seq 1 240); do  # up to 20 minutes: a cold start compiles the model (~3.5 min seen on 2 cores)
    if curl -sf "http://127.0.0.1:$port/v1/models" > /dev/null; then break; fi
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || { echo "a vLLM server exited; see $LOGS/*.log" >&2; tail -20 "$LOGS"/*.log >&2; exit 1; }; done
    [ "$i" = 240 ] && { echo "vLLM on port $port did not start in 20 minutes; see $LOGS" >&2; exit 1; }
    sleep 5
  done
  echo "vLLM up on port $port" >&2
done
TRLM_TEST_VLLM_URL="http://127.0.0.1:$FWD_PORT/v1" TRLM_TEST_VLLM_REVERSE_URL="http://127.0.0.1:$REV_PORT/v1" \
  TRLM_REQUIRE_VLLM=1 .venv/bin/python -m pytest -q -m vllm tests "$@"
