#!/bin/sh
# Installs Airlock from this offline bundle, with dpkg only: no network, no apt (docs/deploy.md).
#
#   sudo ./install.sh
#
# 1. Checks that every file of the bundle matches SHA256SUMS and that nothing was added to debs/:
#    on any difference it stops before installing anything.
# 2. Installs each package of the bundle that this machine lacks or has at an older version (a newer
#    installed version is kept), following install-plan: apt's sequence of dpkg unpack and
#    configure steps, computed on the build machine.
# 3. Checks that airlock is installed and that airlockd runs.
# The service is not started: configure /etc/airlock/airlockd.yaml first (docs/deploy.md).
set -eu

fail() { echo "install.sh: $*" >&2; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

[ "$(id -u)" -eq 0 ] || fail "run as root (it installs packages with dpkg)"
for tool in dpkg dpkg-query sha256sum; do
  command -v "$tool" >/dev/null || fail "$tool not found: this installs on Debian 12"
done
[ "$(dpkg --print-architecture)" = amd64 ] || fail "this bundle is for amd64, this machine is $(dpkg --print-architecture)"
case "$(cat /etc/debian_version 2>/dev/null)" in
  12.*|bookworm*) ;;
  *) fail "this bundle is for Debian 12 (bookworm); /etc/debian_version says '$(cat /etc/debian_version 2>/dev/null)'" ;;
esac

# Integrity: every file listed matches, and every file present is listed.
[ -f SHA256SUMS ] && [ -f install-plan ] || fail "SHA256SUMS or install-plan is missing: not a complete bundle"
report=$(mktemp)
if ! sha256sum --check --strict --quiet SHA256SUMS >"$report" 2>&1; then
  sed 's/^/  /' "$report" >&2
  rm -f "$report"
  fail "the bundle does not match its SHA256SUMS (damaged or altered): nothing was installed"
fi
rm -f "$report"
for f in debs/* install.sh install-plan packages.list; do
  cut -c67- SHA256SUMS | grep -qxF "$f" || fail "$f is not listed in SHA256SUMS (added to the bundle?): nothing was installed"
done

# What to install: the packages missing here or installed at an older version, in apt's plan.
needed() {  # needed PACKAGE VERSION: true when this machine lacks it or has an older version
  installed=$(dpkg-query -W -f='${db:Status-Abbrev} ${Version}' "$1" 2>/dev/null || true)
  case "$installed" in
    "ii "*) ! dpkg --compare-versions "${installed##* }" ge "$2" ;;
    *) true ;;
  esac
}
selected=" "
kept=0
while read -r step pkg ver file; do
  [ "$step" = unpack ] || continue
  [ -f "$file" ] || fail "install-plan names $file, which is not in the bundle"
  if needed "$pkg" "$ver"; then selected="$selected$pkg "; else kept=$((kept + 1)); fi
done <install-plan

# Runs apt's plan with dpkg: each run of consecutive "unpack" steps is one `dpkg --unpack`, each run
# of "configure" steps one `dpkg --configure`, restricted to the selected packages.
run_steps() {
  [ -n "$batch" ] || return 0
  # shellcheck disable=SC2086 # one word per file or package name; bundle names have no spaces
  if [ "$batch_step" = unpack ]; then
    DEBIAN_FRONTEND=noninteractive dpkg --unpack $batch
  else
    DEBIAN_FRONTEND=noninteractive dpkg --force-confold --configure $batch
  fi
  batch=""
}
if [ "$selected" != " " ]; then
  echo "install.sh: installing $(echo "$selected" | wc -w) packages ($kept already present)"
  batch_step=""
  batch=""
  while read -r step pkg _ file; do
    case "$selected" in *" $pkg "*) ;; *) continue ;; esac
    [ "$step" = "$batch_step" ] || { run_steps; batch_step=$step; }
    if [ "$step" = unpack ]; then batch="$batch $file"; else batch="$batch $pkg"; fi
  done <install-plan
  run_steps
else
  echo "install.sh: every package is already installed"
fi
if [ -n "$(dpkg --audit 2>&1)" ]; then
  dpkg --audit >&2
  fail "dpkg reports packages not fully installed (above)"
fi

dpkg-query -W -f='${db:Status-Abbrev}' airlock 2>/dev/null | grep -q '^ii' || fail "airlock is not installed after dpkg ran"
/usr/sbin/airlockd --version || fail "airlockd does not run"
echo "install.sh: done. Next: configure /etc/airlock/airlockd.yaml (docs/deploy.md), then" \
  "airlockd --check-config /etc/airlock/airlockd.yaml and systemctl enable --now airlockd"
