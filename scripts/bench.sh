#!/usr/bin/env bash
# Regenerates BENCHMARKS.md: builds the release binaries, installs the peers (CodeCarbon,
# Zeus) into a virtual environment, runs the benchmark binaries of bench/ and renders
# their JSON into BENCHMARKS.md (raw results kept in bench/results/).
#
# Usage: scripts/bench.sh [--minutes N] [--points N] [--days N] [--out FILE]
#   --minutes  steady-state minutes of each agent run (1 Hz with peers, then 10 Hz); 5
#   --points   line-protocol points for the ingest comparison; 500000
#   --days     days of hourly data for the report latency; 365
#   --out      the Markdown file to write; BENCHMARKS.md
# Needs: cargo, python3 (venv), /usr/bin/victoria-metrics (Debian 'victoria-metrics'),
# getconf. Takes about 2 × minutes + 5 minutes. Not part of CI.
set -euo pipefail

minutes=5
points=500000
days=365
out=BENCHMARKS.md
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) minutes="$2"; shift 2 ;;
        --points) points="$2"; shift 2 ;;
        --days) days="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        *) echo "scripts/bench.sh: unknown option '$1'; see the usage at the top of the script" >&2; exit 2 ;;
    esac
done
command="scripts/bench.sh --minutes $minutes --points $points --days $days"

cd "$(dirname "$0")/.."
cargo build --release -p inferwatt-agent -p inferwatt-collector -p inferwatt-nvml-sim \
    -p inferwatt-tests -p inferwatt-bench

venv="${INFERWATT_BENCH_VENV:-$HOME/.cache/inferwatt-bench/venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q codecarbon==3.3.2 zeus==0.16.0

results="bench/results"
mkdir -p "$results"
{
    echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nproc:   $(nproc)"
    echo "cpu:     $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
    echo "memory:  $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "kernel:  $(uname -r)"
    echo "rustc:   $(rustc --version)"
    echo "load before: $(uptime)"
} > "$results/machine.txt"

bin=target/release
"$bin/bench-agent" --minutes "$minutes" --interval-s 1 --peers --python "$venv/bin/python" \
    --out "$results/agent-1hz.json" > /dev/null
"$bin/bench-agent" --minutes "$minutes" --interval-s 0.1 --out "$results/agent-10hz.json" > /dev/null
"$bin/bench-ingest" --points "$points" --out "$results/ingest.json" > /dev/null
"$bin/bench-report" --days "$days" --out "$results/report.json" > /dev/null
echo "load after:  $(uptime)" >> "$results/machine.txt"

"$bin/bench-markdown" --results "$results" --command "$command" > "$out"
echo "wrote $out (raw results in $results/)"
