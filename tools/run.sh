#!/usr/bin/env bash
# Builds Airlock (installing missing Debian packages) and runs it on a working default.
# Until the daemon lands (issue 3) this runs one generation with the engine in-process:
#   MODEL=path.gguf PROMPT="..." tools/run.sh
# Defaults: the shared stories260K model when ../shared is present, else a synthetic model.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

deploy/build-deps.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j "$(nproc)" --target airlockctl

ctl="$root/build/release/tools/airlockctl"
model=${MODEL:-}
if [ -z "$model" ]; then
  shared="${AIRLOCK_TEST_DATA:-$root/../shared}/models/stories260K-f32.gguf"
  if [ -f "$shared" ]; then
    model=$shared
  else
    model="$root/build/synthetic-llama.gguf"
    [ -f "$model" ] || "$ctl" model synth --out "$model" --layers 2 --embd 256 --heads 4 --kv-heads 2 --ff 512 --type q8_0
  fi
fi
echo "== airlockctl run --model $model" >&2
exec "$ctl" run --model "$model" --prompt "${PROMPT:-Once upon a time}" --max-tokens "${MAX_TOKENS:-64}" \
  --temperature "${TEMPERATURE:-0}"
