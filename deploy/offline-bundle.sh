#!/bin/sh
# Builds the offline install bundle on a connected Debian 12 build machine (docs/deploy.md):
#
#   deploy/offline-bundle.sh AIRLOCK_DEB OUT_DIR
#
# writes OUT_DIR/airlock-offline-<version>-amd64.tar and, beside it, its sha256 in
# airlock-offline-<version>-amd64.tar.sha256 (compare it through a second channel at the site).
# The tarball holds one folder:
#
#   install.sh     installs with dpkg only, after checking every file against SHA256SUMS
#   SHA256SUMS     sha256 of every other file in the folder
#   packages.list  package, version and file of each .deb
#   install-plan   apt's sequence of dpkg steps for them (unpack, configure), which install.sh follows
#   debs/          airlock_<version>_amd64.deb and the exact Debian packages it needs
#
# The dependency closure is resolved by apt itself, as for a machine on which nothing is installed
# (an empty dpkg status), from the package's Depends and Pre-Depends (not Recommends): so it holds
# everything airlock needs down to libc6, whatever the target already has; install.sh installs only
# what the target lacks or has at an older version. Versions are those of this machine's apt
# sources (run `apt-get update` first for the current point release and security updates).
set -eu

fail() { echo "offline-bundle: $*" >&2; exit 1; }
[ $# -eq 2 ] || fail "usage: $0 AIRLOCK_DEB OUT_DIR"
deb=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
mkdir -p "$2"
out=$(cd "$2" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
[ -f "$deb" ] || fail "no such package: $1"
for tool in apt-get dpkg-deb sha256sum tar; do
  command -v "$tool" >/dev/null || fail "$tool not found: this runs on a Debian build machine"
done

package=$(dpkg-deb -f "$deb" Package)
version=$(dpkg-deb -f "$deb" Version)
arch=$(dpkg-deb -f "$deb" Architecture)
[ "$package" = airlock ] || fail "$1 is package '$package', not airlock"
name="airlock-offline-${version}-${arch}"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
stage="$tmp/$name"
mkdir -p "$stage/debs"

# What apt would install on an empty machine: its simulation, with a dpkg status file that lists
# nothing. "Inst NAME (VERSION SOURCE [ARCH])" lines, in apt's install order.
: >"$tmp/empty-status"
if ! apt-get --simulate --no-install-recommends -o Dir::State::status="$tmp/empty-status" \
       -o Debug::NoLocking=true install "$deb" >"$tmp/plan" 2>"$tmp/plan.err"; then
  cat "$tmp/plan.err" >&2
  fail "apt could not resolve the dependencies of $deb from this machine's sources"
fi
sed -n 's/^Inst \([^ ]*\) (\([^ ]*\) [^[]*\[\([a-z0-9]*\)\].*/\1 \2 \3/p' "$tmp/plan" >"$tmp/closure"
grep -q "^airlock $version " "$tmp/closure" || { cat "$tmp/plan" >&2; fail "apt's plan does not install airlock $version"; }

# Download exactly those versions (apt checks them against the signed archive indexes).
cd "$stage/debs"
while read -r pkg ver _; do
  [ "$pkg" = airlock ] && continue
  apt-get download -qq "${pkg%%:*}=$ver" >/dev/null 2>"$tmp/download.err" || {
    cat "$tmp/download.err" >&2; fail "could not download $pkg $ver"; }
done <"$tmp/closure"
cp "$deb" "$stage/debs/"

# packages.list: package, version and file, in apt's order. install-plan: apt's own sequence of
# dpkg steps ("unpack PACKAGE VERSION FILE", "configure PACKAGE"; consecutive steps of one kind are
# one dpkg run), so that a package is unpacked only once what it pre-depends on is configured.
for f in "$stage"/debs/*.deb; do
  echo "$(dpkg-deb -f "$f" Package) $(dpkg-deb -f "$f" Version) debs/$(basename "$f")"
done >"$tmp/files"
while read -r pkg ver _; do
  line=$(awk -v p="${pkg%%:*}" -v v="$ver" '$1 == p && $2 == v' "$tmp/files")
  [ -n "$line" ] || fail "downloaded no file for $pkg $ver"
  echo "$line"
done <"$tmp/closure" >"$stage/packages.list"
sed -n 's/^Inst \([^ :]*\)[^ ]* .*/unpack \1/p; s/^Conf \([^ :]*\)[^ ]* .*/configure \1/p' "$tmp/plan" |
  while read -r step pkg; do
    if [ "$step" = unpack ]; then echo "unpack $(awk -v p="$pkg" '$1 == p' "$stage/packages.list")"; else echo "configure $pkg"; fi
  done >"$stage/install-plan"
[ "$(grep -c '^unpack [^ ]* [^ ]* debs/' "$stage/install-plan")" -eq "$(wc -l <"$stage/packages.list")" ] ||
  fail "install-plan and packages.list disagree"
count=$(wc -l <"$stage/packages.list")
[ "$count" -eq "$(ls "$stage/debs" | wc -l)" ] || fail "packages.list and debs/ disagree"

cp "$here/offline-install.sh" "$stage/install.sh"
chmod 0755 "$stage/install.sh"
(cd "$stage" && find . -type f ! -name SHA256SUMS | sed 's|^\./||' | LC_ALL=C sort | xargs sha256sum >SHA256SUMS)

tarball="$out/$name.tar"
# Reproducible: sorted names, fixed owner and times.
tar -C "$tmp" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$tarball" "$name"
(cd "$out" && sha256sum "$name.tar" >"$name.tar.sha256")
echo "offline-bundle: $tarball ($count packages, $(du -h "$tarball" | cut -f1))"
cat "$tarball.sha256"
