#!/bin/sh
# airlockd under its packaged systemd unit, for real (CTest: systemd_service, label "package"):
#
#   deploy/test-systemd-service.sh BUILD_DIR [SHARED_DIR]
#
# 1. builds the package and the offline bundle from BUILD_DIR;
# 2. makes a clean Debian 12 root with systemd (debootstrap --variant=minbase --include=systemd,
#    systemd-sysv,dbus) and installs the bundle there with install.sh, offline;
# 3. does there what docs/deploy.md tells the operator: lab PKI, publisher key, a signed bundle of
#    the shared stories260K model imported into /var/lib/airlock/models, the configuration filled
#    in (deploy/test-systemd/), airlockd --check-config as the airlock user, systemctl enable;
# 4. boots the root as a container (systemd-nspawn --boot, its own network namespace with only lo):
#    systemd starts airlockd with the packaged unit (every hardening setting in force), and a probe
#    unit (deploy/test-systemd/check.sh) checks it serves a generation over mutual TLS, runs as the
#    airlock user with no capabilities, no new privileges and a seccomp filter, survives
#    `systemctl reload`, and stops cleanly; then the container powers off.
# Needs root. Exit 77 (skipped) without root, systemd-nspawn or the shared model, unless CI=true.
set -eu

fail() { echo "test-systemd-service: $*" >&2; exit 1; }
skip() { if [ "${CI:-}" = true ]; then fail "$* (CI=true: a skip is a failure)"; fi; echo "test-systemd-service: skipped: $*"; exit 77; }
[ $# -ge 1 ] || fail "usage: $0 BUILD_DIR [SHARED_DIR]"
build=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
shared=${AIRLOCK_TEST_DATA:-${2:-$here/../../shared}}
model="$shared/models/stories260K-f32.gguf"
[ "$(id -u)" -eq 0 ] || skip "needs root for debootstrap, chroot and systemd-nspawn"
for tool in debootstrap systemd-nspawn chroot cpack; do
  command -v "$tool" >/dev/null || skip "$tool not found (deploy/build-deps.sh installs it)"
done
[ -f "$model" ] || skip "no $model (set AIRLOCK_TEST_DATA)"

tmp=$(mktemp -d /var/tmp/airlock-systemd-test.XXXXXX)
root="$tmp/root"
cleanup() {
  for m in proc sys dev/pts dev; do umount -l "$root/$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$tmp"
}
trap cleanup EXIT
in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

echo "== clean Debian 12 root with systemd (in the background), package and bundle"
mirror=${AIRLOCK_DEBIAN_MIRROR:-$(sed -n 's|^URIs: *\(http[^ ]*/debian\)/*$|\1|p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)}
mirror=${mirror:-http://deb.debian.org/debian}
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm "$root" "$mirror" \
  >"$tmp/debootstrap.log" 2>&1 &
bootstrap=$!
cpack --config "$build/CPackConfig.cmake" -B "$tmp/deb" >"$tmp/cpack.log" 2>&1 || { cat "$tmp/cpack.log" >&2; fail "cpack failed"; }
deb=$(ls "$tmp"/deb/airlock_*_amd64.deb)
version=$(dpkg-deb -f "$deb" Version)
sh "$here/offline-bundle.sh" "$deb" "$tmp/out" >/dev/null
wait "$bootstrap" || { tail -n 30 "$tmp/debootstrap.log" >&2; fail "debootstrap failed (mirror $mirror)"; }
for m in proc sys dev/pts dev; do umount -l "$root/$m" 2>/dev/null || true; done

echo "== install offline, then the operator's steps (docs/deploy.md)"
mkdir -p "$root/root/bundle"
tar -xf "$tmp/out/airlock-offline-${version}-amd64.tar" -C "$root/root/bundle" --strip-components=1
unshare --net chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin sh /root/bundle/install.sh \
  >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log" >&2; fail "install.sh failed"; }
cp "$model" "$root/root/model.gguf"
cp "$here/test-systemd/airlockd.yaml" "$here/test-systemd/check.sh" "$here/test-systemd/setup.sh" "$root/root/"
cp "$here/test-systemd/airlock-check.service" "$root/etc/systemd/system/"
in_root sh /root/setup.sh >"$tmp/setup.log" 2>&1 || { cat "$tmp/setup.log" >&2; fail "the operator's steps failed"; }
chroot --userspec=airlock:airlock "$root" /usr/sbin/airlockd --check-config /etc/airlock/airlockd.yaml ||
  fail "airlockd --check-config refused the configuration"
[ "$(in_root stat -c '%U:%G %a' /etc/airlock/airlockd.yaml)" = "root:airlock 640" ] || fail "the configuration's owner or mode changed"

echo "== boot: systemd starts airlockd with the packaged unit"
# --keep-unit --register=no: this host need not run systemd itself. --private-network: only lo.
if ! timeout 300 systemd-nspawn --boot --keep-unit --register=no --private-network --console=pipe \
       --directory="$root" >"$tmp/boot.log" 2>&1 </dev/null; then
  tail -n 40 "$tmp/boot.log" >&2
  [ -f "$root/root/report" ] && cat "$root/root/report" >&2
  fail "the container did not boot and power off within 300 s"
fi
[ -f "$root/root/result" ] || { tail -n 40 "$tmp/boot.log" >&2; fail "the probe unit did not run"; }
result=$(cat "$root/root/result")
report="$root/root/report"
[ "$result" = ok ] || { cat "$report" >&2; fail "$result"; }
airlock_uid=$(in_root id -u airlock)
for expect in "^generated: ..*" "^Uid:[[:space:]]*$airlock_uid[[:space:]]" "^NoNewPrivs:[[:space:]]*1\$" \
              "^Seccomp:[[:space:]]*2\$" "^CapEff:[[:space:]]*0000000000000000\$" "^CapBnd:[[:space:]]*0000000000000000\$" \
              '"msg":"model verified"' '"msg":"network locked down'; do
  grep -q "$expect" "$report" || { cat "$report" >&2; fail "the probe's report lacks $expect"; }
done
grep '^generated:' "$report"
echo "test-systemd-service: ok"
