#!/usr/bin/env bash
# Installs the Debian 12 packages that building and testing Airlock needs.
# Idempotent and quiet when everything is present; used by both README commands.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libabsl-dev            # absl::Status / StatusOr (the same Abseil gRPC ships with)
  libgtest-dev libgmock-dev libbenchmark-dev
  libpcre2-dev           # Unicode-aware regexes for the BPE pre-tokenizers (\p{L}, \p{N})
  nlohmann-json3-dev     # JSON: CLI --json output, golden test files
  libcli11-dev           # airlockctl command line
  clang libclang-rt-14-dev  # libFuzzer targets
  libssl-dev             # TLS, certificates, CRLs (OpenSSL 3)
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler  # the API
  libyaml-cpp-dev        # the configuration file
  librocksdb-dev         # the daemon's durable state: the audit log
  prometheus-cpp-dev libcpp-httplib-dev  # the metrics endpoint (registry; HTTPS listener)
  libevent-dev           # the OpenAI-compatible HTTPS listener (evhttp, OpenSSL bufferevents)
  libseccomp-dev         # the daemon's network lock-down
  libvulkan-dev glslc    # the Vulkan compute backend: loader + headers, GLSL -> SPIR-V at build time
  mesa-vulkan-drivers    # lavapipe: the same shaders on the CPU, for the Vulkan tests
  python3-grpcio python3-grpc-tools  # the Python client interoperability test
  iproute2 util-linux    # ip / unshare for the network-namespace test
  prometheus             # promtool checks deploy/prometheus/; a test scrapes airlockd with the real server
  lintian                # checks the Debian package (deploy/check-package.sh)
  systemd                # systemd-analyze scores the unit offline (deploy/check-package.sh)
  debootstrap            # a clean Debian 12 root for the offline-bundle install test
  systemd-container      # systemd-nspawn boots that root to run airlockd under its packaged unit
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "build-deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The prometheus package is here for its binaries only (tests run their own instance on a free
# loopback port). On a systemd machine its postinst starts a system Prometheus on :9090: when this
# script installed it, that service is stopped and disabled again.
if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
