#!/usr/bin/env bash
# Issue #20's GPU measurements: prior swap vs stock CFG under ComfyUI's own VRAM limits, the prior in fp8, and
# TorchCompileModel. One process per scenario (ComfyUI's --reserve-vram is read once per process).
#
#   tools/bench_budgets.sh OUT_DIR [SCENARIO ...]     # default: every scenario, in the order below
#   tools/bench_budgets.sh --list                     # the scenario names
#
# Appends to OUT_DIR/results.jsonl (one JSON line per scenario, its "scenario" key naming it) and OUT_DIR/bench.log
# (every scenario's full output; two files, so they come back from a device's $OUT). A scenario that fails or runs past its limit is recorded as {"scenario": …, "error": …}
# and the script goes on. Runs the benchmark with the host ComfyUI (tools/host.py python; it installs the host on
# first use). Override with BENCH_PYTHON, e.g. BENCH_PYTHON="python3" with COMFYUI_DIR set.
# The budget scenarios take 1-2 minutes each on one H200; the compile scenarios are mostly inductor compiling
# (stock's batch-2 forward and the swap's batch-1 forward, ComfyUI's UNet compiles in ~25 graphs): expected
# 2-4 minutes each, limit 9. On a device with a 10-minute limit per command run them in groups, e.g.
#   tools/bench_budgets.sh out/b sdxl_8gb sdxl_12gb sdxl_16gb sd15_4gb
#   tools/bench_budgets.sh out/b sdxl_8gb_ssd1b sdxl_8gb_vega
#   tools/bench_budgets.sh out/b sd35m_12gb sd35m_24gb
#   tools/bench_budgets.sh out/b sd15_compiled
#   tools/bench_budgets.sh out/b sdxl_compiled
# (inductor's cache in /tmp/torchinductor_$USER makes a second compile run on the same machine much faster).
set -u
cd "$(dirname "$0")/.."

COMMON=${BENCH_COMMON:-"--device cuda --steps 10 --repeats 2"}
FP8="--prior-weight-dtype fp8_e4m3fn"
declare -A SCENARIO=(
  # SDXL 1024²: the pair's fp16 weights are 9.6 GB; with the prior in fp8 7.2 GB
  [sdxl_8gb]="--models sdxl --simulate-vram-gb 8 --variants stock,swap,swap_fp8 $FP8"
  # swap_overlap: the two replayed forwards side by side (second stream), where the pair fits
  [sdxl_12gb]="--models sdxl --simulate-vram-gb 12 --variants stock,swap,swap_overlap,swap_fp8 $FP8"
  [sdxl_16gb]="--models sdxl --simulate-vram-gb 16 --variants stock,swap,swap_overlap,swap_fp8 $FP8"
  # SDXL fine-tune with a distilled SDXL as prior (SSD-1B 2.5 GB fp16, Vega 1.4 GB): fits beside it in 8 GB?
  [sdxl_8gb_ssd1b]="--models sdxl --simulate-vram-gb 8 --variants stock,swap_small,swap_small_fp8 --small-prior ssd1b $FP8"
  [sdxl_8gb_vega]="--models sdxl --simulate-vram-gb 8 --variants stock,swap_small,swap_small_overlap --small-prior vega"
  # SD1.5 512²: 3.2 GB of fp16 weights for the pair
  [sd15_4gb]="--models sd15 --simulate-vram-gb 4 --variants stock,swap,swap_fp8,swap_fp8_overlap $FP8"
  # SD3.5-medium-size MMDiT-X pair at 1024²: 2 × 4.7 GB fp16
  [sd35m_12gb]="--models sd35m --simulate-vram-gb 12 --variants stock,swap,swap_fp8,swap_fp8_overlap $FP8"
  [sd35m_24gb]="--models sd35m --simulate-vram-gb 24 --variants stock,swap,swap_fp8 $FP8"
  # TorchCompileModel (inductor) on the fine-tune and the prior, whole card; eager stock and swap beside
  [sd15_compiled]="--models sd15 --compile --variants stock,swap,stock_compiled,swap_compiled,swap_compiled_overlap"
  [sdxl_compiled]="--models sdxl --compile --variants stock,swap,stock_compiled,swap_compiled,swap_compiled_overlap"
)
ORDER=(sdxl_8gb sdxl_12gb sdxl_16gb sdxl_8gb_ssd1b sdxl_8gb_vega sd15_4gb sd35m_12gb sd35m_24gb sd15_compiled sdxl_compiled)
LIMIT_S=${BENCH_LIMIT_S:-300}  # per scenario; each should finish well within it
COMPILE_LIMIT_S=${BENCH_COMPILE_LIMIT_S:-540}  # inductor compiles stock's batch-2 and the swap's batch-1 forward

if [ "${1:-}" = "--list" ]; then printf '%s\n' "${ORDER[@]}"; exit 0; fi
if [ $# -lt 1 ]; then echo "usage: $0 OUT_DIR [SCENARIO ...] (scenarios: ${ORDER[*]})" >&2; exit 2; fi
OUT=$1; shift
mkdir -p "$OUT"
[ $# -gt 0 ] && ORDER=("$@")
read -r -a PY <<< "${BENCH_PYTHON:-python3 tools/host.py python}"

status=0
for name in "${ORDER[@]}"; do
  if [ -z "${SCENARIO[$name]+x}" ]; then echo "unknown scenario $name" >&2; status=2; continue; fi
  echo "== $name: benchmark.py $COMMON ${SCENARIO[$name]}" >&2
  start=$(date +%s)
  log=$(mktemp)
  # shellcheck disable=SC2086
  limit=$LIMIT_S; [[ $name == *compiled ]] && limit=$COMPILE_LIMIT_S
  timeout --kill-after=15 "$limit" "${PY[@]}" tools/benchmark.py $COMMON ${SCENARIO[$name]} --tag "$name" > "$log" 2>&1
  rc=$?
  took=$(( $(date +%s) - start ))
  { echo "===== $name (exit $rc, ${took}s): benchmark.py $COMMON ${SCENARIO[$name]}"; cat "$log"; } >> "$OUT/bench.log"
  if line=$(grep -m1 "^{\"scenario\": \"$name\"" "$log"); then
    echo "$line" >> "$OUT/results.jsonl"
    echo "   done in ${took}s" >&2
  else
    why="exit $rc"; [ $rc -eq 124 ] && why="over ${limit}s"
    echo "{\"scenario\": \"$name\", \"error\": \"$why\", \"seconds\": $took}" >> "$OUT/results.jsonl"
    echo "   FAILED ($why) after ${took}s:" >&2
    tail -5 "$log" >&2
    status=1
  fi
  rm -f "$log"
done
exit $status
