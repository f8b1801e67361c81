#!/usr/bin/env bash
# A Cloud TPU VM (single host or pod slice) from this machine, with gcloud:
#   bash launch/tpu_pod.sh create  NAME ZONE ACCELERATOR        # e.g. caopd-v5p us-east5-a v5p-64 (reuses an existing VM)
#   bash launch/tpu_pod.sh setup   NAME ZONE                    # copy this checkout to every worker, install
#   bash launch/tpu_pod.sh run     NAME ZONE -- TRAIN_ARGS...   # start the same command on every worker
#   bash launch/tpu_pod.sh logs    NAME ZONE                    # stream worker 0's log
#   bash launch/tpu_pod.sh stop    NAME ZONE                    # SIGTERM: every worker saves a checkpoint and exits
#   bash launch/tpu_pod.sh delete  NAME ZONE
# TRAIN_ARGS are `python -m caopd_jax.train` arguments, e.g. --config=configs/paper.py:qwen3-8b,science --mesh=auto
# --config.train.output_dir=/mnt/bucket/runs/x (run folders are local paths: mount a bucket with gcsfuse on every
# worker; a gs:// path is refused). Every worker runs the same command; jax.distributed finds
# the others from the TPU VM metadata. DRY_RUN=1 prints the gcloud commands instead of running them. Before
# creating a slice, check the config fits it on a Linux x86-64 machine (no TPU needed; libtpu in .venv-tpu):
# .venv-tpu/bin/python -m caopd_jax.train.aot --config=... (BUILD.md, "TPU without a TPU").
# Environment: RUNTIME_VERSION (default v2-alpha-tpuv5), PROJECT (default: gcloud's), REMOTE_DIR (~/caopd-jax).
set -euo pipefail
cd "$(dirname "$0")/.."
action=${1:?usage: tpu_pod.sh create|setup|run|logs|stop|delete NAME ZONE [ACCELERATOR | -- TRAIN_ARGS]}
name=${2:?missing NAME}
zone=${3:?missing ZONE}
shift 3
REMOTE_DIR=${REMOTE_DIR:-caopd-jax}
project=()
[ -n "${PROJECT:-}" ] && project=(--project "$PROJECT")

run() {
  if [ "${DRY_RUN:-0}" = 1 ]; then printf '%q ' "$@"; echo; else "$@"; fi
}
on_workers() {   # on_workers WORKERS COMMAND: ssh to the given workers (all or 0)
  run gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" "${project[@]}" --worker="$1" --command "$2"
}

case "$action" in
  create)
    accelerator=${1:?missing ACCELERATOR, e.g. v5p-64}
    if [ "${DRY_RUN:-0}" != 1 ] && gcloud compute tpus tpu-vm describe "$name" --zone "$zone" "${project[@]}" >/dev/null 2>&1; then
      echo "[tpu] $name exists in $zone; reusing it"
    else
      run gcloud compute tpus tpu-vm create "$name" --zone "$zone" "${project[@]}" \
        --accelerator-type "$accelerator" --version "${RUNTIME_VERSION:-v2-alpha-tpuv5}"
    fi ;;
  setup)
    run gcloud compute tpus tpu-vm scp --recurse . "$name:$REMOTE_DIR" --zone "$zone" "${project[@]}" --worker=all
    on_workers all "cd $REMOTE_DIR && python3 -m pip install -q -r requirements.txt 'jax[tpu]' && python3 -m pip install -q --no-deps -e ." ;;
  run)
    [ "${1:-}" = "--" ] && shift
    args=$(printf '%q ' "$@")
    on_workers all "cd $REMOTE_DIR && CAOPD_DISTRIBUTED=auto nohup python3 -m caopd_jax.train $args > caopd.log 2>&1 &" ;;
  logs)
    on_workers 0 "tail -n 200 -f $REMOTE_DIR/caopd.log" ;;
  stop)
    on_workers all "pkill -TERM -f caopd_jax.train || true" ;;
  delete)
    run gcloud compute tpus tpu-vm delete "$name" --zone "$zone" "${project[@]}" --quiet ;;
  *)
    echo "unknown action $action: use create, setup, run, logs, stop or delete" >&2
    exit 2 ;;
esac
