#!/usr/bin/env bash
# The whole stack on a GPU machine (the lent nvidia-h200): control plane (SQLite), eager Celery,
# a node agent registering the real GPU through NVML, real CUDA vLLM workers, the gateway.
# See bench/gpu/README.md for staging the wheels; then, from the checkout's root there:
#
#   bench/gpu/run.sh install     # wheels from $STAGE into $SITE (once per machine)
#   bench/gpu/run.sh discover    # what the agent registers; a child pinned to the GPU
#   bench/gpu/run.sh start       # control plane + agent in the background
#   bench/gpu/run.sh tiny        # deploy the tiny model, call it through /v1/, stop it
#   bench/gpu/run.sh big         # deploy a Llama-8B-shaped dummy model, compare memory, stop it
#   bench/gpu/run.sh bench       # gateway/direct throughput at 16 and 64 clients
#   bench/gpu/run.sh down        # stop everything
set -euo pipefail
cd "$(dirname "$0")/../.."
STAGE=${STAGE:-$HOME/gpu}
SITE=${SITE:-$HOME/site}
VAR=${VAR:-$HOME/cpvar}
PY=${PY:-$(command -v python3)}
export PYTHONPATH=$SITE:$PWD HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 PYTHONUNBUFFERED=1
export DEBUG=1 SECRET_KEY=gpu-run-not-secret CONTROLPLANE_VAR_DIR=$VAR
export CONTROLPLANE_URL=http://127.0.0.1:8000
mkdir -p "$VAR"
log() { echo "[$(date +%T)] $*"; }

case "${1:-}" in
install)
  cd "$STAGE"
  if ls vllm.whl.part_* >/dev/null 2>&1; then cat vllm.whl.part_* > "$(cat VLLM_WHEEL_NAME)" && rm vllm.whl.part_*; fi
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" ./*.whl
  log "installed $(ls ./*.whl | wc -l) wheels into $SITE"
  "$PY" -c 'import torch, vllm, django; print("torch", torch.__version__, "vllm", vllm.__version__, "django", django.__version__, torch.cuda.get_device_name(0))'
  ;;
discover)
  "$PY" -m nodes.agent.discovery
  uuid=$("$PY" -m nodes.agent.discovery | "$PY" -c 'import json,sys; d=json.load(sys.stdin); print(d["devices"][0]["uuid"])')
  "$PY" -m nodes.agent.discovery --check-assignment "$uuid" --python "$PY"
  ;;
start)
  "$PY" manage.py migrate --noinput -v0
  "$PY" manage.py ensure_admin
  "$PY" models_registry/engine_scripts/build_tiny_model.py var/models/tiny-llama >/dev/null
  "$PY" bench/gpu/make_8b_shape.py var/models/tiny-llama var/models/llama-8b-shape
  "$PY" manage.py register_runtime --name vllm-cuda --python "$PY" --env "PYTHONPATH=$SITE"
  cred=$("$PY" manage.py createnode h200 --address 127.0.0.1 | grep -o 'cpn-[A-Za-z0-9]*' | head -1)
  setsid nohup "$PY" -m granian --interface asgi --loop uvloop --host 127.0.0.1 --port 8000 \
    controlplane.asgi:application > "$VAR/controlplane.log" 2>&1 < /dev/null &
  for _ in $(seq 60); do curl -sf -o /dev/null "$CONTROLPLANE_URL/accounts/login/" && break; sleep 1; done
  NODE_CREDENTIAL=$cred setsid nohup "$PY" manage.py nodeagent --name h200 --address 127.0.0.1 \
    --state-dir "$VAR/agent" --port-range 8100-8199 --interval 2 > "$VAR/agent.log" 2>&1 < /dev/null &
  for _ in $(seq 60); do grep -q "registered" "$VAR/agent.log" 2>/dev/null && break; sleep 1; done
  log "control plane and agent up"; tail -3 "$VAR/agent.log"
  "$PY" manage.py shell -c 'from nodes.models import Gpu; [print("registered GPU:", g.index, g.uuid, g.name, g.memory_total_bytes // 2**20, "MiB", g.kind) for g in Gpu.objects.all()]'
  ;;
tiny)
  "$PY" bench/gpu/deploy.py deploy tiny-llama var/models/tiny-llama \
    --arg gpu-memory-utilization=0.2 --arg enforce-eager=true --kv-cache-bytes $((4 << 30))
  key=$("$PY" bench/gpu/deploy.py tenant tiny-llama)
  for _ in $(seq 20); do  # the gateway's route table follows the worker within a moment
    code=$(curl -s -o "$VAR/chat.json" -w '%{http_code}' "$CONTROLPLANE_URL/v1/chat/completions" \
      -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
      -d '{"model":"tiny-llama","messages":[{"role":"user","content":"hello"}],"max_tokens":8}')
    [ "$code" = 200 ] && break; sleep 1
  done
  log "through the gateway: HTTP $code $(head -c 300 "$VAR/chat.json")"
  "$PY" manage.py shell -c 'from controlplane.models import UsageRecord as U; [print("usage:", u.request_id, u.prompt_tokens, u.completion_tokens, u.cost, u.status) for u in U.objects.all()[:3]]'
  "$PY" bench/gpu/deploy.py stop tiny-llama
  ;;
big)
  # Llama-3-8B's shape in bf16: 8.03e9 parameters x 2 bytes.
  "$PY" bench/gpu/deploy.py deploy llama-8b-shape var/models/llama-8b-shape \
    --weights-bytes 16060522496 --kv-cache-bytes $((16 << 30)) \
    --arg load-format=dummy --arg gpu-memory-utilization=0.3 --arg enforce-eager=true
  grep -hE "Model loading took|Available KV cache memory|KV cache size" "$VAR"/agent/logs/*.log 2>/dev/null | tail -4 || true
  "$PY" bench/gpu/deploy.py stop llama-8b-shape
  ;;
bench)
  for clients in 16 64; do
    log "bench at $clients clients"
    BENCH_CONCURRENCY=$clients BENCH_ENGINE_PYTHON=$PY \
      BENCH_ENGINE_ARGS="--gpu-memory-utilization 0.2 --enforce-eager" \
      BENCH_ROUNDS=${BENCH_ROUNDS:-2} "$PY" bench/gateway.py 2>&1 | tail -14
  done
  ;;
down)
  pkill -TERM -f "manage.py nodeagent" || true; sleep 5
  pkill -TERM -f "granian" || true
  pkill -TERM -f "vllm.entrypoints" || true
  nvidia-smi --query-gpu=memory.used,memory.total --format=csv
  ;;
*) sed -n '2,13p' "$0"; exit 2 ;;
esac
