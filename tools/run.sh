#!/usr/bin/env bash
# Builds Airlock (installing missing Debian packages) and starts airlockd on a working default:
# a lab PKI, a configuration serving one model to one user "dev", and an airlockctl profile for
# that user, all under $AIRLOCK_HOME (default ~/.local/share/airlock-dev; re-used on later runs).
#   MODEL=path.gguf tools/run.sh          # serve another GGUF (name "default")
#   PORT=7443 tools/run.sh                # listen port (default 7443, on 127.0.0.1)
#   METRICS_PORT=9464 tools/run.sh        # metrics port (HTTPS, client certificate "prometheus")
# Defaults: the shared stories260K model when ../shared is present, else a synthetic model.
# The daemon runs in the foreground; Ctrl-C drains it and exits.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

deploy/build-deps.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j "$(nproc)" --target airlockd airlockctl

ctl="$root/build/release/tools/airlockctl"
home=${AIRLOCK_HOME:-$HOME/.local/share/airlock-dev}
port=${PORT:-7443}
metrics_port=${METRICS_PORT:-9464}
mkdir -p "$home"
chmod 700 "$home"

model=${MODEL:-}
if [ -z "$model" ]; then
  shared="${AIRLOCK_TEST_DATA:-$root/../shared}/models/stories260K-f32.gguf"
  if [ -f "$shared" ]; then
    model=$(realpath "$shared")
  else
    model="$home/synthetic-llama.gguf"
    [ -f "$model" ] || "$ctl" model synth --out "$model" --layers 2 --embd 256 --heads 4 --kv-heads 2 --ff 512 --type q8_0
  fi
fi
model=$(realpath "$model")

# A lab CA, the server certificate (localhost, 127.0.0.1) and a client certificate for "dev".
if [ ! -f "$home/pki/ca.key" ]; then
  "$ctl" pki init --dir "$home/pki" >/dev/null
  "$ctl" pki issue --dir "$home/pki" --name dev >/dev/null
fi
# The certificate a local Prometheus (or curl) scrapes the metrics endpoint with.
[ -f "$home/pki/prometheus.crt" ] || "$ctl" pki issue --dir "$home/pki" --name prometheus >/dev/null
"$ctl" pki crl --dir "$home/pki" >/dev/null  # a fresh CRL: airlockd refuses an expired one

cat >"$home/airlockd.yaml" <<YAML
# Written by tools/run.sh. Reference: docs/configuration.md.
server:
  listen: "127.0.0.1:$port"
tls:
  cert_file: "$home/pki/server.crt"
  key_file: "$home/pki/server.key"
  client_ca_file: "$home/pki/ca.crt"
  crl_files: ["$home/pki/crl.pem"]
metrics:
  listen: "127.0.0.1:$metrics_port"
  scrapers: [prometheus]
audit:
  state_dir: "$home/state"
  signing_key_file: "$home/audit-signing.key"
  hmac_secret_file: "$home/audit-hmac.secret"
models:
  - name: default
    path: "$model"
    chat_template: llama2
users:
  - name: dev
    roles: [developer, auditor]
roles:
  - name: developer
    methods: ["*"]
    models: ["*"]
  # The Admin service (the audit log) is never reached through "*": it must be named.
  - name: auditor
    methods: ["airlock.v1.Admin/*"]
    models: []
YAML
chmod 600 "$home/airlockd.yaml"

# airlockctl finds the daemon through this profile (see docs/airlockctl.md).
mkdir -p "$HOME/.config/airlock"
profiles="$HOME/.config/airlock/profiles.yaml"
# Written (and rewritten on later runs) only when absent or written by this script before.
if [ ! -f "$profiles" ] || head -1 "$profiles" | grep -q "^# Written by tools/run.sh"; then
  cat >"$profiles" <<YAML
# Written by tools/run.sh; delete this line to keep your edits.
default: dev
profiles:
  dev:
    server: "127.0.0.1:$port"
    ca: "$home/pki/ca.crt"
    cert: "$home/pki/dev.crt"
    key: "$home/pki/dev.key"
    server_name: localhost
YAML
else
  echo "run.sh: $profiles is yours; add a profile for 127.0.0.1:$port with $home/pki/dev.crt" >&2
fi

cat >&2 <<TEXT
== airlockd on 127.0.0.1:$port serving $model as "default"
   In another terminal:
     $ctl health
     $ctl generate --model default --prompt "Once upon a time"
     $ctl chat --model default --message "Tell me a story"
     curl --cacert $home/pki/ca.crt --cert $home/pki/prometheus.crt --key $home/pki/prometheus.key \\
       https://localhost:$metrics_port/metrics
   Ctrl-C drains and stops the daemon.
TEXT
exec "$root/build/release/daemon/airlockd" --config "$home/airlockd.yaml"
