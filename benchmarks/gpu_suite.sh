#!/usr/bin/env bash
# GPU benchmark suite for a fresh machine with one CUDA GPU and this repo checked out (no .venv).
#
#   bash benchmarks/gpu_suite.sh            # results: $OUT/bench.jsonl (+ $OUT/suite.log)
#
# 1. installs the package into the machine's python (`pip install -e . --no-deps --no-build-isolation`, which
#    works offline with the preinstalled setuptools), then only the dependencies that are missing: from
#    $WHEELS (default .whl/) when that folder exists, else from the index if one is reachable (the
#    benchmarks compose conf/ with Hydra, as the app does).
# 2. step throughput of resnet32x4 -> resnet8x4 ($STEPS timed steps, interleaved bare/full): PCKD in
#    bf16 + channels_last, eager and with compiled loss terms; whole PCKD steps through the app
#    (benchmarks/epoch_time.py, device-resident data, $EPOCH_STEPS steps), eager, with compiled loss terms, and
#    with everything compiled in reduce-overhead mode (CUDA graphs);
#    then PCKD and KD in fp32 and bf16, KD in bf16 + channels_last, and compiled models last;
# 3. the CIFAR-100 train loader (4 views): DataLoader per worker count vs the GPU-resident path, on the data in
#    .device_data/cifar-100-python (skipped when absent).
# Steps 2-3 are the stage "bench". Two more stages (STAGES="bench packed row" runs all three, in that order):
# - packed: aggregate epochs/s and memory per run of $PACKED_RUNS runs side by side through the joblib
#   launcher (benchmarks/packed_runs.py throughput, $PACKED_EPOCHS epochs each, on the real data);
# - row: the paper row (benchmarks/packed_runs.py row --profile paper-row: the teacher, then its $ROW_JOBS
#   students at once, resumable in $ROW_OUT), $ROW_EPOCHS epochs (empty: the published 240); its report and
#   summaries are copied to $OUT/paper_row.
# Real CIFAR-100 arrives as chunks (benchmarks/device_data.py, one chunk carried per device call): when
# $DATA_ROOT/manifest.json exists, the chunks are checked and unpacked into $DATA_ROOT/cifar-100-python first.
# Every JSON line goes to $OUT/bench.jsonl. The whole suite stops starting runs once $BUDGET_S seconds
# (default 330) have passed and kills a run at that point, so it stays under 6 minutes; compiled runs go
# last. Overridable: PYTHON, OUT, BUDGET_S, STEPS, WARMUP, EPOCH_STEPS, PAIR, DEVICE, DATA_ROOT, WHEELS, WORKERS,
# LOADER_BATCHES, LOADER_ARGS, SKIP_COMPILE=1, SKIP_INSTALL=1, STAGES, PACKED_RUNS, PACKED_EPOCHS, PACKED_PAIR,
# PACKED_OVERRIDES, ROW_EPOCHS, ROW_JOBS, ROW_OUT, ROW_OVERRIDES (overrides: space-separated Hydra overrides).
# DEVICE=cpu with tiny sizes runs the whole script as a dry run (tests/test_benchmarks_packed_runs.py shows how).
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PY="${PYTHON:-python3}"
OUT="${OUT:-$REPO/benchmarks/out}"
BUDGET_S="${BUDGET_S:-330}"
STEPS="${STEPS:-30}"
WARMUP="${WARMUP:-5}"
PAIR="${PAIR:-resnet32x4:resnet8x4}"
DEVICE="${DEVICE:-cuda}"
DATA_ROOT="${DATA_ROOT:-$REPO/.device_data}"
WHEELS="${WHEELS:-$REPO/.whl}"
WORKERS="${WORKERS:-0 2 4 8}"
EPOCH_STEPS="${EPOCH_STEPS:-150}"
LOADER_BATCHES="${LOADER_BATCHES:-50}"
LOADER_ARGS="${LOADER_ARGS:-}"  # e.g. --partial for a cut-down copy (dry runs)
STAGES="${STAGES:-bench}"
PACKED_RUNS="${PACKED_RUNS:-1 2 4 8}"
PACKED_EPOCHS="${PACKED_EPOCHS:-2}"
PACKED_PAIR="${PACKED_PAIR:-resnet56:resnet20}"
PACKED_OVERRIDES="${PACKED_OVERRIDES:-}"
ROW_EPOCHS="${ROW_EPOCHS:-}"
ROW_JOBS="${ROW_JOBS:-4}"
ROW_OUT="${ROW_OUT:-$REPO/outputs/paper_row}"
ROW_OVERRIDES="${ROW_OVERRIDES:-}"
mkdir -p "$OUT"
JSONL="$OUT/bench.jsonl"
LOG="$OUT/suite.log"
TMP="$(mktemp -d)"
: >"$JSONL"
: >"$LOG"
export PYTHONUNBUFFERED=1 WANDB_MODE=offline WANDB_SILENT=true
# the scripts also find src/ by themselves; this keeps everything working if the editable install fails
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-$TMP/inductor}"

log() { echo "[$(date +%H:%M:%S) +${SECONDS}s] $*" | tee -a "$LOG" >&2; }

# ---- 1. environment and install -------------------------------------------------------------------------
log "repo $REPO, python $(command -v "$PY") ($("$PY" -c 'import sys; print(sys.version.split()[0])'))"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$LOG"
if [ "$DEVICE" = cuda ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    log "ERROR: torch cannot see a CUDA device"
    exit 1
fi
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    if "$PY" -m pip install --no-deps --no-build-isolation -e . >>"$LOG" 2>&1; then
        log "installed pckd-lightning (editable, --no-deps)"
    else
        log "editable install failed (see log); using PYTHONPATH=src"
    fi
    missing=$("$PY" - <<'EOF'
import importlib.util as u
need = {"torch": "torch", "torchvision": "torchvision", "lightning": "lightning", "torchmetrics": "torchmetrics",
        "yaml": "pyyaml", "numpy": "numpy", "PIL": "pillow", "hydra": "hydra-core", "omegaconf": "omegaconf",
        "sklearn": "scikit-learn", "rich": "rich", "joblib": "joblib",
        "hydra_plugins.hydra_joblib_launcher": "hydra-joblib-launcher"}

def have(mod):
    try:
        return u.find_spec(mod) is not None
    except ModuleNotFoundError:  # a dotted name whose parent is missing
        return False

print(" ".join(pkg for mod, pkg in need.items() if not have(mod)))
EOF
    )
    if [ -n "$missing" ]; then
        log "missing: $missing"
        if [ -d "$WHEELS" ]; then
            "$PY" -m pip install --no-index --find-links "$WHEELS" $missing >>"$LOG" 2>&1 || log "could not install from $WHEELS"
        else
            timeout 60 "$PY" -m pip install --timeout 5 --retries 0 $missing >>"$LOG" 2>&1 \
                || log "could not install $missing (no index reachable?); the benchmarks need them"
        fi
    fi
fi
"$PY" - >>"$JSONL" 2>>"$LOG" <<'EOF'
import importlib.util as u, json, platform, torch
print(json.dumps({
    "bench": "env", "python": platform.python_version(), "torch": torch.__version__,
    "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    "cpu_count": __import__("os").cpu_count(), "hydra": u.find_spec("hydra") is not None,
}))
EOF
tail -n 1 "$JSONL" | tee -a "$LOG"

# ---- runs -------------------------------------------------------------------------------------------------
# run NAME MIN_SECONDS_LEFT script args...: skipped when less time is left, killed when the budget runs out
run() {
    local name=$1 need=$2
    shift 2
    local left=$((BUDGET_S - SECONDS))
    if ((left < need)); then
        log "SKIP $name: ${left}s of the budget left, needs ~${need}s"
        echo "{\"bench\": \"skipped\", \"name\": \"$name\", \"seconds_left\": $left}" >>"$JSONL"
        return
    fi
    log "RUN $name (at most ${left}s): $*"
    timeout -k 5 "$left" "$PY" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err"
    local rc=$?
    grep -v '^{' "$TMP/$name.out" | tee -a "$LOG" >&2
    grep '^{' "$TMP/$name.out" >>"$JSONL"
    if ((rc != 0)); then
        log "FAILED $name (exit $rc); last lines of its stderr:"
        tail -n 15 "$TMP/$name.err" | tee -a "$LOG" >&2
        echo "{\"bench\": \"failed\", \"name\": \"$name\", \"exit\": $rc}" >>"$JSONL"
    fi
}

stage() { [[ " $STAGES " == *" $1 "* ]]; }
if [ -f "$DATA_ROOT/manifest.json" ]; then
    log "unpacking the CIFAR-100 chunks in $DATA_ROOT"
    "$PY" benchmarks/device_data.py unpack --src "$DATA_ROOT" 2>&1 | tee -a "$LOG" >&2
fi

STEP=(benchmarks/step_throughput.py --pair "$PAIR" --device "$DEVICE" --steps "$STEPS" --warmup "$WARMUP")
[ "$DEVICE" = cuda ] && STEP+=(--cudnn-benchmark)
EPOCH=(benchmarks/epoch_time.py --paths cifar100_gpu --pair "$PAIR" --steps "$EPOCH_STEPS" --warmup 20)

if stage bench; then
# most telling first: PCKD's step as the app runs it, eager and with compiled loss terms, then whole app steps
run step_pckd_bf16_cl 20 "${STEP[@]}" --method pckd --precision bf16 --channels-last
run step_pckd_bf16_cl_compile_losses 60 "${STEP[@]}" --method pckd --precision bf16 --channels-last \
    --compile-losses
run epoch_pckd 40 "${EPOCH[@]}"
run epoch_pckd_compile_losses 70 "${EPOCH[@]}" --override module.performance.compile_losses=true
run epoch_pckd_cudagraphs 120 "${EPOCH[@]}" --override module.performance.compile=true \
    --override module.performance.compile_losses=true --override module.performance.compile_mode=reduce-overhead
run step_kd_bf16_cl 20 "${STEP[@]}" --method kd --precision bf16 --channels-last
for config in "fp32" "bf16"; do
    for method in pckd kd; do
        run "step_${method}_${config}" 20 "${STEP[@]}" --method "$method" --precision "$config"
    done
done

if [ -d "$DATA_ROOT/cifar-100-python" ]; then
    # shellcheck disable=SC2086  # WORKERS and LOADER_ARGS are lists
    run loader 25 benchmarks/loader_throughput.py --root "$DATA_ROOT" --device "$DEVICE" --batches "$LOADER_BATCHES" \
        --workers $WORKERS $LOADER_ARGS
else
    log "SKIP loader: no $DATA_ROOT/cifar-100-python"
    echo "{\"bench\": \"skipped\", \"name\": \"loader\", \"reason\": \"no data\"}" >>"$JSONL"
fi

if [ "${SKIP_COMPILE:-0}" != 1 ]; then
    for method in pckd kd; do
        run "step_${method}_bf16_cl_compile" 60 "${STEP[@]}" --method "$method" --precision bf16 \
            --channels-last --compile
    done
fi
fi  # stage bench

# ---- several runs on one GPU, and the paper row -----------------------------------------------------------
overrides() { local o; for o in $1; do printf -- '--override=%s\n' "$o"; done; }
ON_DEVICE=()
[ "$DEVICE" = cpu ] && ON_DEVICE=(--override=trainer.accelerator=cpu)
for name in packed row; do
    stage "$name" && [ ! -d "$DATA_ROOT/cifar-100-python" ] && {
        log "SKIP $name: no $DATA_ROOT/cifar-100-python (pack it with benchmarks/device_data.py and carry the chunks)"
        echo "{\"bench\": \"skipped\", \"name\": \"$name\", \"reason\": \"no data\"}" >>"$JSONL"
    }
done
if stage packed && [ -d "$DATA_ROOT/cifar-100-python" ]; then
    mapfile -t extra < <(overrides "$PACKED_OVERRIDES")
    # shellcheck disable=SC2086  # PACKED_RUNS is a list
    run packed_runs 60 benchmarks/packed_runs.py throughput --runs $PACKED_RUNS --epochs "$PACKED_EPOCHS" \
        --root "$DATA_ROOT" --device "$DEVICE" --pair "$PACKED_PAIR" --out "$TMP/packed_runs" \
        "${ON_DEVICE[@]}" "${extra[@]}"
fi
if stage row && [ -d "$DATA_ROOT/cifar-100-python" ]; then
    mapfile -t extra < <(overrides "$ROW_OVERRIDES")
    run paper_row 60 benchmarks/packed_runs.py row --profile paper-row --root "$DATA_ROOT" --out "$ROW_OUT" \
        --jobs "$ROW_JOBS" ${ROW_EPOCHS:+--epochs "$ROW_EPOCHS"} "${ON_DEVICE[@]}" "${extra[@]}"
    # what exists comes back, finished or not (a later call on the same warm machine resumes the row)
    mkdir -p "$OUT/paper_row"
    (cd "$ROW_OUT" && find . -path ./report -prune -exec cp -r --parents {} "$OUT/paper_row" \; \
        -o -name summary.json -exec cp --parents {} "$OUT/paper_row" \;)
    [ -f "$ROW_OUT/report/report.md" ] && tee -a "$LOG" <"$ROW_OUT/report/report.md" >&2
fi

log "done: $(grep -c '"ratio"' "$JSONL") step results, $(grep -c '"bench": "loader"' "$JSONL") loader results in $JSONL"
"$PY" - "$JSONL" <<'EOF' | tee -a "$LOG"
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
print(f"{'method':<8}{'precision':<10}{'cl':<4}{'compile':<9}{'losses':<8}{'bare img/s':>11}{'full img/s':>11}"
      f"{'ratio':>7}{'bare/full ops':>15}{'bare/full peak MiB':>20}")
for r in rows:
    if "ratio" in r:
        peaks = f"{r['bare_peak_mb'] or 0:.0f}/{r['full_peak_mb'] or 0:.0f}"
        ops = f"{r.get('bare_ops')}/{r.get('full_ops')}"
        print(f"{r['method']:<8}{r['precision']:<10}{'y' if r['channels_last'] else 'n':<4}"
              f"{'y' if r['compile'] else 'n':<9}{'y' if r.get('compile_losses') else 'n':<8}"
              f"{r['bare_img_s']:>11.0f}{r['full_img_s']:>11.0f}{r['ratio']:>7.3f}{ops:>15}{peaks:>20}")
for r in rows:
    if "epoch_s_extrapolated" in r:
        print(f"app epoch {r['data_path']} {' '.join(r['overrides'])}: {r['ms_per_step']} ms/step, "
              f"{r['images_per_s']} img/s, epoch {r['epoch_s_extrapolated']} s, {r['ops_per_step']} ops/step")
for r in rows:
    if r.get("bench") == "packed_runs":
        print(f"{r['runs']} runs side by side: {r['epochs_per_s']:.3f} epochs/s in all, "
              f"peak {max(r['peak_mib_per_run'], default=0)} MiB ({r['memory']}) per run")
for r in rows:
    if r.get("bench") == "loader":
        print(f"loader {r['path']:<13} workers {r['workers']:>2}: {r['img_s']:>9.0f} img/s")
EOF
rm -rf "$TMP"
