#!/bin/sh
# Checks the example scrape configuration with `promtool check config`, rule files included,
# on a machine without its TLS files (CTest: promtool_check_config, label "deploy").
#
#   deploy/prometheus/check-config.sh [PROMTOOL] [CONFIG]
#
# promtool stats every ca_file/cert_file/key_file the configuration names, and they exist only
# on the Prometheus server. `check config --syntax-only` skips those, but it also skips the rule
# files, so instead this copies the configuration and the rule files beside it into a temporary
# directory, creates empty placeholder TLS files there, points the copy at them and checks the
# copy in full (rule_files resolve next to the copy, so the rules are checked too).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
promtool=${1:-promtool}
config=${2:-$here/prometheus.yml}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

cp "$config" "$tmp/prometheus.yml"
# rule_files are relative to the configuration's directory: bring its YAML files along.
for f in "$(dirname "$config")"/*.yml; do
  [ "$f" -ef "$config" ] || cp "$f" "$tmp/"
done

# Every uncommented ca_file/cert_file/key_file: an empty file of the same name under $tmp/tls.
mkdir "$tmp/tls"
grep -E '^[[:space:]]*(ca_file|cert_file|key_file):' "$tmp/prometheus.yml" |
  sed -E 's/^[^:]*:[[:space:]]*//; s/[[:space:]]*(#.*)?$//; s/^"(.*)"$/\1/' |
  while read -r path; do
    : >"$tmp/tls/$(basename "$path")"
  done
sed -E -i "s|^([[:space:]]*(ca_file\|cert_file\|key_file):[[:space:]]*\"?)[^[:space:]#\"]*/|\1$tmp/tls/|" \
  "$tmp/prometheus.yml"

"$promtool" check config "$tmp/prometheus.yml"
