#!/bin/sh
# The air-gapped install, end to end (CTest: offline_install, label "package"):
#
#   deploy/test-offline-install.sh BUILD_DIR
#
# 1. builds airlock_<version>_amd64.deb with CPack from BUILD_DIR and the offline bundle from it
#    (deploy/offline-bundle.sh; this machine is the connected build machine);
# 2. makes a clean Debian 12 root with debootstrap (--variant=minbase: nothing but the required
#    packages, so the bundle must bring everything else);
# 3. in that root, with the network cut (a new, empty network namespace), runs the bundle's
#    install.sh on altered copies of the bundle (a flipped byte in a .deb, a .deb added), which must
#    be refused with nothing installed, then on the bundle itself, which must install;
# 4. checks there: airlockd --version, the airlock system user, the configuration's and state
#    directory's owners and modes, and that a second install.sh run changes nothing.
# Needs root (debootstrap, chroot, unshare). Exit 77 (skipped) without it, unless CI=true.
set -eu

fail() { echo "test-offline-install: $*" >&2; exit 1; }
skip() { if [ "${CI:-}" = true ]; then fail "$* (CI=true: a skip is a failure)"; fi; echo "test-offline-install: skipped: $*"; exit 77; }
[ $# -eq 1 ] || fail "usage: $0 BUILD_DIR"
build=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
[ "$(id -u)" -eq 0 ] || skip "needs root for debootstrap, chroot and unshare"
for tool in debootstrap unshare chroot cpack; do
  command -v "$tool" >/dev/null || skip "$tool not found (deploy/build-deps.sh installs it)"
done

tmp=$(mktemp -d /var/tmp/airlock-offline-test.XXXXXX)
cleanup() {
  # debootstrap's second stage may leave /proc or /sys mounted in the root.
  for m in proc sys dev/pts dev; do umount -l "$tmp/root/$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$tmp"
}
trap cleanup EXIT

echo "== package and bundle"
cpack --config "$build/CPackConfig.cmake" -B "$tmp/deb" >"$tmp/cpack.log" 2>&1 || { cat "$tmp/cpack.log" >&2; fail "cpack failed"; }
deb=$(ls "$tmp"/deb/airlock_*_amd64.deb)
version=$(dpkg-deb -f "$deb" Version)
sh "$here/offline-bundle.sh" "$deb" "$tmp/out"
bundle="$tmp/out/airlock-offline-${version}-amd64.tar"
(cd "$tmp/out" && sha256sum --check --quiet "airlock-offline-${version}-amd64.tar.sha256") || fail "the bundle's .sha256 does not match it"
tar -tf "$bundle" >"$tmp/bundle.list"
for f in install.sh SHA256SUMS packages.list "debs/airlock_${version}_amd64.deb"; do
  grep -qx "airlock-offline-${version}-amd64/$f" "$tmp/bundle.list" || fail "the bundle lacks $f"
done
# The closure reaches below what the package names directly.
for pkg in libgrpc++1.51 libprotobuf32 librocksdb7.8 libssl3 adduser libc6 libabsl20220623; do
  tar -xOf "$bundle" "airlock-offline-${version}-amd64/packages.list" | grep -q "^$pkg " || fail "the bundle lacks $pkg"
done

echo "== clean Debian 12 root (debootstrap --variant=minbase bookworm)"
mirror=${AIRLOCK_DEBIAN_MIRROR:-$(sed -n 's|^URIs: *\(http[^ ]*/debian\)/*$|\1|p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)}
mirror=${mirror:-http://deb.debian.org/debian}
debootstrap --variant=minbase bookworm "$tmp/root" "$mirror" >"$tmp/debootstrap.log" 2>&1 || {
  tail -n 30 "$tmp/debootstrap.log" >&2; fail "debootstrap failed (mirror $mirror)"; }
for m in proc sys dev/pts dev; do umount -l "$tmp/root/$m" 2>/dev/null || true; done
if chroot "$tmp/root" dpkg-query -W airlock >/dev/null 2>&1; then fail "the clean root already has airlock"; fi
if chroot "$tmp/root" dpkg-query -W libgrpc++1.51 >/dev/null 2>&1; then fail "the clean root already has gRPC"; fi

# Runs a command in the root, in a new network namespace: the only interface there is lo (checked
# from /proc/self/net/dev before entering the root), so nothing can be fetched.
offline() {
  unshare --net sh -c '
    ifaces=$(tail -n +3 /proc/self/net/dev | cut -d: -f1 | tr -d " " | tr "\n" " ")
    [ "$ifaces" = "lo " ] || { echo "network not cut: interfaces $ifaces" >&2; exit 90; }
    root=$1; shift
    exec chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"' sh "$tmp/root" "$@"
}

unpack() {  # unpack NAME: the bundle, extracted into /root/NAME in the root
  mkdir -p "$tmp/root/root/$1"
  tar -xf "$bundle" -C "$tmp/root/root/$1" --strip-components=1
}
refused() {  # refused NAME EXPECTED_MESSAGE
  if offline sh "/root/$1/install.sh" >"$tmp/$1.log" 2>&1; then cat "$tmp/$1.log" >&2; fail "install.sh accepted the $1 bundle"; fi
  grep -q "$2" "$tmp/$1.log" || { cat "$tmp/$1.log" >&2; fail "the $1 bundle was refused without saying '$2'"; }
  if chroot "$tmp/root" dpkg-query -W -f='${db:Status-Abbrev}' airlock 2>/dev/null | grep -q .; then
    fail "the $1 bundle installed something"; fi
  echo "refused as it should: $1: $(grep 'install.sh:' "$tmp/$1.log" | tail -n 1)"
}

echo "== altered bundles are refused, with nothing installed"
unpack flipped
target=$(ls "$tmp"/root/root/flipped/debs/libgrpc++1.51_*.deb)
byte=$(od -An -tu1 -j2000 -N1 "$target" | tr -d ' ')
printf "\\$(printf %o $((255 - byte)))" | dd of="$target" bs=1 seek=2000 conv=notrunc 2>/dev/null
refused flipped "does not match its SHA256SUMS"
unpack added
cp "$tmp/root/root/added/debs/airlock_${version}_amd64.deb" "$tmp/root/root/added/debs/zz-extra_1.0_amd64.deb"
refused added "zz-extra_1.0_amd64.deb is not listed in SHA256SUMS"

echo "== the bundle installs offline"
unpack bundle
offline sh /root/bundle/install.sh >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log" >&2; fail "install.sh failed"; }
tail -n 3 "$tmp/install.log"
offline /usr/sbin/airlockd --version | grep -q "$version" || fail "airlockd --version in the root does not say $version"
chroot "$tmp/root" getent passwd airlock | grep -q ':/var/lib/airlock:/usr/sbin/nologin$' || fail "no airlock system user with a nologin shell"
[ "$(chroot "$tmp/root" stat -c '%U:%G %a' /etc/airlock/airlockd.yaml)" = "root:airlock 640" ] || fail "airlockd.yaml owner/mode: $(chroot "$tmp/root" stat -c '%U:%G %a' /etc/airlock/airlockd.yaml)"
[ "$(chroot "$tmp/root" stat -c '%U:%G %a' /var/lib/airlock)" = "airlock:airlock 750" ] || fail "/var/lib/airlock owner/mode: $(chroot "$tmp/root" stat -c '%U:%G %a' /var/lib/airlock)"
chroot "$tmp/root" dpkg --audit >"$tmp/audit.log" 2>&1
[ ! -s "$tmp/audit.log" ] || { cat "$tmp/audit.log" >&2; fail "dpkg --audit reports half-installed packages"; }

echo "== a second run changes nothing"
offline sh /root/bundle/install.sh >"$tmp/again.log" 2>&1 || { cat "$tmp/again.log" >&2; fail "the second install.sh run failed"; }
grep -q "every package is already installed" "$tmp/again.log" || { cat "$tmp/again.log" >&2; fail "the second run installed something"; }
echo "test-offline-install: ok ($(wc -l <"$tmp/root/root/bundle/packages.list") packages in the bundle)"
