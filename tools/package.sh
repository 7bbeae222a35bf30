#!/usr/bin/env bash
# Builds Airlock (Release, installing missing Debian packages) and writes the Debian package
# build/package/airlock_<version>_amd64.deb (docs/deploy.md).
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/build-deps.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j "$(nproc)" --target airlockd airlockctl airlock_package_files
cpack --config build/release/CPackConfig.cmake -B build/package
ls -l build/package/*.deb
