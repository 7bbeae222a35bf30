#!/bin/sh
# Builds airlock_<version>_amd64.deb with CPack from a built tree and checks it (CTest:
# deb_package, label "package"): file name, control fields, Depends computed from the binaries,
# conffiles, maintainer scripts, the installed files and their modes, that the packaged airlockd
# runs and refuses the packaged configuration until it is filled in, the packaged unit's offline
# `systemd-analyze security` score, and lintian (errors and warnings fail it; there are no overrides).
#
#   deploy/check-package.sh BUILD_DIR
set -eu

build=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "check-package: $*" >&2; exit 1; }

cpack --config "$build/CPackConfig.cmake" -B "$tmp/out" >"$tmp/cpack.log" 2>&1 || { cat "$tmp/cpack.log" >&2; fail "cpack failed"; }
version=$(sed -n 's/^set(CPACK_PACKAGE_VERSION "\(.*\)")$/\1/p' "$build/CPackConfig.cmake")
deb="$tmp/out/airlock_${version}_amd64.deb"
[ -f "$deb" ] || fail "no $deb (got: $(ls "$tmp/out"))"

field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = airlock ] || fail "Package is $(field Package)"
[ "$(field Architecture)" = amd64 ] || fail "Architecture is $(field Architecture)"
depends=$(field Depends)
for dep in adduser procps libc6 libgrpc++1.51 libprotobuf32 librocksdb7.8 libssl3 libyaml-cpp0.7 libseccomp2 \
           libprometheus-cpp-core1.0 libcpp-httplib0.11 libevent-openssl-2.1-7; do
  case ", $depends," in *", $dep "*|*", $dep,"*) ;; *) fail "Depends lacks $dep: $depends" ;; esac
done

dpkg-deb --ctrl-tarfile "$deb" | tar -t >"$tmp/control.list"
for f in ./postinst ./prerm ./postrm ./conffiles ./md5sums; do
  grep -qx "$f" "$tmp/control.list" || fail "control archive lacks $f"
done
dpkg-deb -I "$deb" conffiles | grep -qx /etc/airlock/airlockd.yaml || fail "airlockd.yaml is not a conffile"

dpkg-deb -c "$deb" >"$tmp/contents"
for f in ./usr/sbin/airlockd ./usr/bin/airlockctl ./etc/airlock/airlockd.yaml ./lib/systemd/system/airlockd.service \
         ./usr/share/airlock/prometheus/airlock-alerts.yml ./usr/share/doc/airlock/copyright \
         ./usr/share/doc/airlock/changelog.gz ./usr/share/man/man8/airlockd.8.gz ./usr/share/doc/airlock/deploy.md \
         ./usr/share/doc/airlock/airlockd-gpu.conf; do
  grep -q " $f\$" "$tmp/contents" || fail "package lacks $f"
done
grep " ./usr/sbin/airlockd\$" "$tmp/contents" | grep -q '^-rwxr-xr-x root/root' || fail "airlockd mode/owner wrong"
if grep -v ' ./$' "$tmp/contents" | grep -qv ' root/root '; then fail "a file not owned by root"; fi

# Hardened as Debian builds are: full RELRO with immediate binding, fortified libc calls.
for bin in usr/sbin/airlockd usr/bin/airlockctl; do
  dpkg-deb --fsys-tarfile "$deb" | tar -xO "./$bin" >"$tmp/bin"
  readelf -d "$tmp/bin" | grep -q 'BIND_NOW' || fail "$bin is not linked with -z now"
  readelf -lW "$tmp/bin" | grep -q 'GNU_RELRO' || fail "$bin has no RELRO segment"
  readelf --dyn-syms -W "$tmp/bin" | grep -q '__[a-z_]*_chk' || fail "$bin calls no fortified (_chk) libc function"
done

# The packaged programs run, and the packaged configuration is refused until the site fills it in.
dpkg-deb -x "$deb" "$tmp/root"
"$tmp/root/usr/sbin/airlockd" --version | grep -q "$version" || fail "airlockd --version does not say $version"
"$tmp/root/usr/bin/airlockctl" --help >/dev/null || fail "airlockctl --help failed"
if "$tmp/root/usr/sbin/airlockd" --check-config "$tmp/root/etc/airlock/airlockd.yaml" >"$tmp/check.log" 2>&1; then
  fail "the packaged configuration passed --check-config with no certificates or models in place"
fi
grep -q "tls.cert_file" "$tmp/check.log" || { cat "$tmp/check.log" >&2; fail "the refusal does not name tls.cert_file"; }

# Devices are closed unless the site installs the GPU drop-in, which allows GPU nodes only.
unit="$tmp/root/lib/systemd/system/airlockd.service"
grep -qx 'DevicePolicy=closed' "$unit" || fail "the unit does not close devices"
if grep -q '^DeviceAllow=' "$unit"; then fail "the unit allows a device by default: $(grep '^DeviceAllow=' "$unit")"; fi
gpu="$tmp/root/usr/share/doc/airlock/airlockd-gpu.conf"
if grep '^DeviceAllow=' "$gpu" | grep -qvE '^DeviceAllow=char-(nvidia\*|drm) rw$'; then
  fail "the GPU drop-in allows more than GPU nodes: $(grep '^DeviceAllow=' "$gpu")"
fi

# The unit as packaged: "OK" or better (exposure below 2.0, i.e. 20 on systemd's 0-100 scale).
if command -v systemd-analyze >/dev/null; then
  (cd "$tmp" && systemd-analyze security --offline=yes --threshold=19 "$tmp/root/lib/systemd/system/airlockd.service" \
    >"$tmp/security.log" 2>&1) || { tail -5 "$tmp/security.log" >&2; fail "systemd-analyze security: exposure above 1.9"; }
  tail -1 "$tmp/security.log"
elif [ "${CI:-}" = true ]; then
  fail "systemd-analyze is missing"
fi

if command -v lintian >/dev/null; then
  lintian --allow-root --fail-on error,warning "$deb" \
    || fail "lintian found problems (above)"
elif [ "${CI:-}" = true ]; then
  fail "lintian is missing: install it (deploy/build-deps.sh)"
fi
echo "check-package: $(basename "$deb") OK"
