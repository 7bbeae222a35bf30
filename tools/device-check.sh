#!/usr/bin/env bash
# The GPU device check (issue 17): on a machine with a GPU, the Vulkan consistency suite on the
# real device, then prefill and decode speed of synthetic 1B- and 8B-shaped Q4_K_M / Q8_0 models
# (single stream, and 8 and 32 concurrent requests), with the fraction of the device's memory
# bandwidth that decode reaches. Finishes within 12 minutes (every step has its own deadline).
#
# The GPU machines lent to us run another distribution than Debian 12 and cannot install
# packages, so the check runs from a bundle made here:
#
#   tools/device-check.sh bundle            # builds Release, then writes build/device-bundle.tar.xz:
#                                           # the binaries, every shared library they load (and
#                                           # Debian's dynamic loader, to run them with), and the
#                                           # shared test data the consistency suite reads
#   tools/device-check.sh run [--quick] [--no-suite] [--device vulkan:N] [--allow-cpu-device]
#                                           # on the GPU machine, from the repository root, with
#                                           # build/device-bundle.tar.xz carried there
#
# `run` picks the first Vulkan device that is not a CPU implementation (lavapipe) unless
# --device names one; --allow-cpu-device lets lavapipe stand in (a dry run of the script itself,
# with --quick: tiny models and short runs; --no-suite skips the consistency suite). AIRLOCK_DEVICE_BANDWIDTH_GBS overrides the device's peak memory
# bandwidth, otherwise looked up by the GPU's name (nvidia-smi). Output: a log on stdout, and
# $OUT/device-check (or /tmp/airlock-device-check) holding results.md and the raw JSON lines.
#
# llama.cpp's references (node-llama-cpp's CUDA and Vulkan builds) need the npm registry, which the
# GPU machines cannot reach; the check says so instead of running them.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bundle=$root/build/device-bundle
shared=${AIRLOCK_SHARED:-$root/../shared}

usage() {
  sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

# ---- bundle (here) -------------------------------------------------------------------------------
make_bundle() {
  cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null || exit 1
  cmake --build build/release --target airlock-bench airlockctl vulkan_tests vulkan_golden_tests || exit 1
  rm -rf "$bundle"
  mkdir -p "$bundle/bin" "$bundle/lib" "$bundle/shared/models/vocab" "$bundle/shared/golden"
  local bins=(build/release/tools/airlock-bench build/release/tools/airlockctl
              build/release/tests/vulkan_tests build/release/tests/vulkan_golden_tests)
  cp "${bins[@]}" "$bundle/bin/"
  # Every library the binaries load, and the loader itself (the GPU machine's C library may be
  # older than Debian's). The Vulkan driver (ICD) is the GPU machine's own and is not bundled.
  local lib
  for lib in $(ldd "${bins[@]}" | awk '/=> \//{print $3} /^\t\/.*ld-linux/{print $1}' | sort -u); do
    cp -L "$lib" "$bundle/lib/"
  done
  # The consistency suite's data: the small shared models and their llama.cpp references, and the
  # Llama 2 vocabulary for the synthetic models.
  if [ -d "$shared/models" ]; then
    cp "$shared"/models/*.gguf "$shared/models/README.md" "$bundle/shared/models/" 2>/dev/null
    cp "$shared/models/vocab/ggml-vocab-llama-spm.gguf" "$bundle/shared/models/vocab/"
    cp -r "$shared"/golden/kv-f16 "$shared"/golden/kv-f32 "$shared/golden/README.md" "$bundle/shared/golden/"
  else
    echo "no shared data at $shared: the bundle's consistency suite will skip" >&2
  fi
  git rev-parse HEAD > "$bundle/commit" 2>/dev/null
  # One compressed file: the device tool carries at most 64 MiB, the directory is about 60.
  tar -C "$root/build" -cJf "$bundle.tar.xz" device-bundle || exit 1
  du -sh "$bundle" "$bundle.tar.xz"
  echo "carry build/device-bundle.tar.xz and run: tools/device-check.sh run"
}

# ---- run (on the GPU machine) --------------------------------------------------------------------
started=$(date +%s)
elapsed() { echo $(( $(date +%s) - started )); }
log() { printf '[%4ss] %s\n' "$(elapsed)" "$*"; }

# A bundled binary under Debian's loader and libraries.
B() {
  local bin=$1
  shift
  "$bundle/lib/ld-linux-x86-64.so.2" --library-path "$bundle/lib" "$bundle/bin/$bin" "$@"
}

# Peak memory bandwidth in GB/s of the GPU named $1 (datasheet figures), or empty.
bandwidth_of() {
  case "$1" in
    *H200*) echo 4800 ;;
    *H100*NVL*) echo 3900 ;;
    *H100*PCIe*) echo 2000 ;;
    *H100*) echo 3350 ;;
    *A100*80GB*) echo 2039 ;;
    *A100*) echo 1555 ;;
    *L40S*) echo 864 ;;
    *L4*) echo 300 ;;
    *MI300X*) echo 5300 ;;
    *) echo "" ;;
  esac
}

run_check() {
  local quick=0 device="" allow_cpu=0 suite=1
  while [ $# -gt 0 ]; do
    case "$1" in
      --quick) quick=1 ;;
      --device) device=$2; shift ;;
      --allow-cpu-device) allow_cpu=1 ;;
      --no-suite) suite=0 ;;
      *) usage ;;
    esac
    shift
  done
  if [ ! -x "$bundle/bin/airlock-bench" ] && [ -s "$bundle.tar.xz" ]; then
    mkdir -p /tmp/airlock-device-bundle
    tar -C /tmp/airlock-device-bundle -xJf "$bundle.tar.xz" || exit 2
    bundle=/tmp/airlock-device-bundle/device-bundle
  fi
  [ -x "$bundle/bin/airlock-bench" ] || { echo "no bundle at $bundle: run 'tools/device-check.sh bundle' first"; exit 2; }
  local out=${OUT:-/tmp}/device-check
  local work=/tmp/airlock-device-check
  mkdir -p "$out" "$work"
  local results=$out/results.md
  : > "$results"

  log "bundle of commit $(cat "$bundle/commit" 2>/dev/null || echo '?')"
  log "CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) threads"
  local gpu_name=""
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/nvidia-smi: /'
    gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
  fi
  # The Vulkan devices, as airlockd would see them.
  B airlockctl devices || true
  local listing
  listing=$(B airlockctl devices --json 2>/dev/null)
  if [ -z "$device" ]; then
    device=$(printf '%s' "$listing" | python3 -c '
import json, sys
allow_cpu = sys.argv[1] == "1"
for d in json.load(sys.stdin)["devices"]:
    if d["id"] == "cpu" or not d["usable"]:
        continue
    if d["type"] == "cpu" and not allow_cpu:
        continue
    print(d["id"]); break
' "$allow_cpu")
  fi
  if [ -z "$device" ]; then
    log "no usable Vulkan GPU. Vulkan drivers (ICD files) on this machine:"
    ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d 2>&1 | sed 's/^/  /'
    log "(NVIDIA: the driver's Vulkan ICD, nvidia_icd.json and libGLX_nvidia.so.0, must be installed;"
    log " in a container, NVIDIA_DRIVER_CAPABILITIES must include graphics)"
    exit 3
  fi
  local device_name
  device_name=$(printf '%s' "$listing" | python3 -c '
import json, sys
for d in json.load(sys.stdin)["devices"]:
    if d["id"] == sys.argv[1]:
        print(d["name"])
' "$device")
  [ -n "$gpu_name" ] || gpu_name=$device_name
  local peak=${AIRLOCK_DEVICE_BANDWIDTH_GBS:-$(bandwidth_of "$gpu_name")}
  log "device: $device ($device_name); peak memory bandwidth: ${peak:-unknown} GB/s"
  {
    echo "# Device check, $(date -u +%Y-%m-%dT%H:%MZ), commit $(cat "$bundle/commit" 2>/dev/null)"
    echo
    echo "- GPU: $gpu_name ($device, Vulkan: $device_name), peak bandwidth ${peak:-unknown} GB/s"
    echo "- CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) threads"
  } >> "$results"

  # 1. The consistency suite on the device: every op and model against the CPU backend, the golden
  #    files teacher-forced, batch invariance, placement on two logical devices.
  local data=$bundle/shared
  local suites=(vulkan_tests vulkan_golden_tests)
  [ $suite = 1 ] || suites=()
  for t in "${suites[@]}"; do
    log "$t on $device"
    AIRLOCK_TEST_DATA=$data AIRLOCK_TEST_VULKAN_DEVICE=$device timeout 240 \
      "$bundle/lib/ld-linux-x86-64.so.2" --library-path "$bundle/lib" "$bundle/bin/$t" --gtest_brief=1 \
      > "$out/$t.log" 2>&1
    local rc=$?
    grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[==========\] .* ran|vulkan \]" "$out/$t.log" | sed 's/^/  /'
    echo "- $t: exit $rc ($(grep -cE '^\[  FAILED  \]' "$out/$t.log") failed lines; log $t.log)" >> "$results"
  done

  # 2. Synthetic models: 1B (16 layers, 2048 wide) and 8B-shaped (32 layers, 4096 wide, 14336 FF),
  #    Llama 2 vocabulary; --quick: two tiny ones.
  local vocab=$data/models/vocab/ggml-vocab-llama-spm.gguf
  local -a shapes
  # Prompt and generated tokens, and concurrent requests (two counts).
  local pp=512 tg=128 bpp=128 btg=128 c1=8 c2=32
  if [ $quick = 1 ]; then
    shapes=("tiny:--layers 2 --embd 256 --heads 4 --kv-heads 2 --ff 512")
    pp=64 tg=16 bpp=32 btg=16 c1=2 c2=4
  else
    shapes=("1b:--layers 16 --embd 2048 --heads 32 --kv-heads 8 --ff 8192"
            "8b:--layers 32 --embd 4096 --heads 32 --kv-heads 8 --ff 14336")
  fi
  {
    echo
    echo "| model | pp$pp t/s | tg$tg t/s | decode GB/s | of peak | $c1 clients t/s | $c2 clients t/s | TTFT p50 at $c2 (ms) |"
    echo "|---|---|---|---|---|---|---|---|"
  } >> "$results"
  local shape type
  for shape in "${shapes[@]}"; do
    for type in q4_K_M q8_0; do
      local name=${shape%%:*} args=${shape#*:}
      local f=$work/synth-$name-$type.gguf
      if [ $(elapsed) -gt 600 ]; then
        log "skipping $name $type: the check is at $(elapsed) s of its 720"
        echo "| $name $type | skipped (time) | | | | | | |" >> "$results"
        continue
      fi
      if [ ! -s "$f" ]; then
        log "synthesising $name $type"
        # shellcheck disable=SC2086
        timeout 300 "$bundle/lib/ld-linux-x86-64.so.2" --library-path "$bundle/lib" "$bundle/bin/airlockctl" \
          model synth --out "$f" $args --ctx 4096 --type "$type" --vocab-from "$vocab" --seed 20250301 >/dev/null \
          || { log "synthesis failed"; rm -f "$f"; continue; }
      fi
      local bytes
      bytes=$(stat -c %s "$f")
      log "$name $type ($((bytes / 1048576)) MiB): pp$pp / tg$tg"
      timeout 150 "$bundle/lib/ld-linux-x86-64.so.2" --library-path "$bundle/lib" "$bundle/bin/airlock-bench" \
        -m "$f" --device "$device" -p $pp -n $tg -r 2 --json > "$out/bench-$name-$type.json" 2> "$out/bench-$name-$type.err"
      log "$name $type: $c1 and $c2 concurrent requests"
      timeout 180 "$bundle/lib/ld-linux-x86-64.so.2" --library-path "$bundle/lib" "$bundle/bin/airlock-bench" \
        batched --engine -m "$f" --device "$device" --npp $bpp --ntg $btg --npl $c1 --npl $c2 -b 512 --json \
        > "$out/batched-$name-$type.json" 2> "$out/batched-$name-$type.err"
      python3 - "$out/bench-$name-$type.json" "$out/batched-$name-$type.json" "$bytes" "${peak:-0}" \
        "$name $type" "pp$pp" "tg$tg" "$c1" "$c2" >> "$results" <<'PY'
import json, sys
bench, batched, size, peak, label = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
pp_test, tg_test, c1, c2 = sys.argv[6], sys.argv[7], int(sys.argv[8]), int(sys.argv[9])
def lines(path):
    out = []
    try:
        for line in open(path):
            line = line.strip()
            if line.startswith("{"):
                out.append(json.loads(line))
    except OSError:
        pass
    return out
def rate(rows, test):
    for r in rows:
        if r.get("test") == test:
            return r.get("tokens_per_second")
    return None
b = lines(bench)
pp, tg = rate(b, pp_test), rate(b, tg_test)
gbs = tg * size / 1e9 if tg else None
frac = f"{100 * gbs / peak:.0f} %" if gbs and peak > 0 else "?"
by_clients = {r.get("clients"): r for r in lines(batched)}
def clients(n, key):
    r = by_clients.get(n)
    return f"{r[key]:.1f}" if r and key in r else "?"
fmt = lambda v: f"{v:.1f}" if v else "?"
print(f"| {label} | {fmt(pp)} | {fmt(tg)} | {fmt(gbs)} | {frac} | {clients(c1, 'tokens_per_second')} | "
      f"{clients(c2, 'tokens_per_second')} | {clients(c2, 'ttft_p50_ms')} |")
PY
      tail -1 "$results"
    done
  done
  {
    echo
    echo "Decode GB/s = tg$tg tokens/s x the file's bytes (every weight read once per token)."
    echo "llama.cpp (node-llama-cpp CUDA/Vulkan): not run, the GPU machine cannot reach the npm registry."
    echo "Finished in $(elapsed) s."
  } >> "$results"
  log "results ($results):"
  cat "$results"
}

case "${1:-}" in
  bundle) make_bundle ;;
  run) shift; run_check "$@" ;;
  *) usage ;;
esac
