#!/usr/bin/env bash
# Unpacks Debian trixie's victoria-metrics (1.112, which takes OTLP/HTTP at
# /opentelemetry/v1/metrics; bookworm's 1.79 does not) into DEST, without installing it:
# `apt-get download` through a private sources list naming the trixie suite of the
# archive this machine already uses, then `dpkg -x`. The OTLP test
# (tests/e2e/tests/otlp.rs) runs DEST/usr/bin/victoria-metrics.
# Usage: scripts/fetch-trixie-victoria-metrics.sh DEST
set -euo pipefail
dest=${1:?usage: $0 DEST}
if [ -x "$dest/usr/bin/victoria-metrics" ]; then
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/deb"
mirror=$(grep -hE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
  | grep -oE 'https?://[^ ]*' | grep -v security | head -n1 || true)
mirror=${mirror:-http://deb.debian.org/debian}
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${mirror%/} trixie main" > "$work/sources.list"
opts=(-q -o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
      -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o APT::Sandbox::User=root)
apt-get "${opts[@]}" update >"$work/update.log" 2>&1 || { cat "$work/update.log" >&2; exit 1; }
(cd "$work/deb" && apt-get "${opts[@]}" download victoria-metrics >/dev/null)
mkdir -p "$dest"
dpkg -x "$work"/deb/victoria-metrics_*.deb "$dest"
"$dest/usr/bin/victoria-metrics" -version 2>&1 | head -n1
