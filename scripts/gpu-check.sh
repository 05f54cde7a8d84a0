#!/usr/bin/env bash
# One prepared run of inferwatt-agent on a real NVIDIA GPU, with two PyTorch loads of
# different power intensity: a bf16 matmul loop ("compute") and a device memory-copy
# loop ("memcopy"). Needs: an NVIDIA GPU and driver, python3 with torch (CUDA), and a
# prebuilt agent (no Rust toolchain): build it elsewhere with
#   cargo build --release -p inferwatt-agent
# and run
#   scripts/gpu-check.sh [path/to/inferwatt-agent] [gpu index]
# It takes about 6 minutes and prints:
#   1. `inferwatt-agent check`: which NVML calls work on this GPU and driver;
#   2. the energy counter against integrated power over the whole run;
#   3. whether per-process utilisation samples arrive (the split methods seen);
#   4. each split method's per-model active energy in the shared phase, against the
#      expectation derived from each load running alone (joules per iteration).
# Everything it writes stays under $OUT (default: a temporary directory). Neither the
# tests nor CI depend on it.
set -euo pipefail

AGENT=${1:-target/release/inferwatt-agent}
GPU=${2:-0}
OUT=${OUT:-$(mktemp -d)}
IDLE_S=${IDLE_S:-30}
SOLO_S=${SOLO_S:-75}
SHARED_S=${SHARED_S:-150}
mkdir -p "$OUT"
[ -x "$AGENT" ] || { echo "no agent binary at '$AGENT' (build it with cargo build --release -p inferwatt-agent)" >&2; exit 2; }
python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' \
  || { echo "python3 with CUDA-enabled torch is required" >&2; exit 2; }
echo "== gpu-check $(date -u +%FT%TZ), output in $OUT"
nvidia-smi --query-gpu=index,name,driver_version,power.limit --format=csv -i "$GPU" || true

cat >"$OUT/load.py" <<'PY'
# A GPU load that turns itself on and off at random (1.5-3 s phases) so that two loads'
# utilisations vary independently, and counts its iterations per second of wall time.
import random, sys, time, torch
kind, seconds, seed, log = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rng = random.Random(seed)
dev = torch.device("cuda")
if kind == "compute":
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    step = lambda: torch.matmul(a, b)
else:
    src = torch.empty(1 << 28, device=dev, dtype=torch.float32)  # 1 GiB
    dst = torch.empty_like(src)
    step = lambda: dst.copy_(src)
torch.cuda.synchronize()
end = time.time() + seconds
iters = 0
with open(log, "w") as f:
    while time.time() < end:
        on = rng.uniform(1.5, 3.0)
        duty = rng.uniform(0.2, 1.0)
        t0 = time.time()
        while time.time() - t0 < on and time.time() < end:
            # Busy for duty of each 100 ms, idle for the rest.
            s = time.time()
            while time.time() - s < 0.1 * duty:
                step(); iters += 1
                if iters % 8 == 0:
                    torch.cuda.synchronize()
            torch.cuda.synchronize()
            time.sleep(max(0.0, 0.1 * (1 - duty)))
        f.write(f"{time.time():.3f} {iters}\n"); f.flush()
PY

UUID=$(nvidia-smi --query-gpu=uuid --format=csv,noheader -i "$GPU")
for split in power_model sm_util; do
  mkdir -p "$OUT/$split"
  cat >"$OUT/$split/agent.toml" <<TOML
[site]
name = "gpu-check"
[sampling]
interval_s = 1.0
split = "$split"
[prometheus]
enabled = false
[server_metrics]
discover = false
[state]
dir = "$OUT/$split/state"
[file]
path = "$OUT/$split/intervals.lp"
[[identify.rules]]
cmdline_regex = 'load\.py (compute|memcopy)'
model = "\$1"
TOML
done

echo "== 1. inferwatt-agent check"
"$AGENT" check --config "$OUT/power_model/agent.toml" | sed -n '1,40p'

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT
for split in power_model sm_util; do
  "$AGENT" run --config "$OUT/$split/agent.toml" >"$OUT/$split/agent.log" 2>&1 &
  pids+=($!)
done
# Power sampled by nvidia-smi for the integrated-power comparison.
nvidia-smi --query-gpu=timestamp,power.draw --format=csv,noheader,nounits -lms 100 -i "$GPU" >"$OUT/power.csv" &
pids+=($!)
mark() { echo "$1 $(date +%s.%N)" >>"$OUT/phases.txt"; }

echo "== idle ${IDLE_S}s"; mark idle; sleep "$IDLE_S"
echo "== compute alone ${SOLO_S}s"; mark compute
CUDA_VISIBLE_DEVICES=$GPU python3 "$OUT/load.py" compute "$SOLO_S" 1 "$OUT/compute-solo.log"
echo "== memcopy alone ${SOLO_S}s"; mark memcopy
CUDA_VISIBLE_DEVICES=$GPU python3 "$OUT/load.py" memcopy "$SOLO_S" 2 "$OUT/memcopy-solo.log"
echo "== both ${SHARED_S}s"; mark shared
CUDA_VISIBLE_DEVICES=$GPU python3 "$OUT/load.py" compute "$SHARED_S" 3 "$OUT/compute-shared.log" &
c=$!
CUDA_VISIBLE_DEVICES=$GPU python3 "$OUT/load.py" memcopy "$SHARED_S" 4 "$OUT/memcopy-shared.log" &
m=$!
wait "$c" "$m"
mark end
sleep 3
cleanup
trap - EXIT

python3 - "$OUT" "$UUID" <<'PY'
import collections, sys, datetime
out, uuid = sys.argv[1], sys.argv[2]
phases = [l.split() for l in open(f"{out}/phases.txt")]
t = {name: float(ts) for name, ts in phases}

def points(path):
    for line in open(path):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        head, fields, ts = line.rsplit(" ", 2) if line.count(" ") >= 2 else (line, "", "0")
        parts = head.split(",")
        tags = dict(p.split("=", 1) for p in parts[1:])
        fv = {}
        for kv in fields.split(","):
            k, v = kv.split("=", 1)
            v = v.rstrip("i")
            try:
                fv[k] = float(v)
            except ValueError:
                fv[k] = v.strip('"')
        yield parts[0], tags, fv, int(ts) / 1e9

def window(split, a, b):
    act, methods, gpu_j = collections.defaultdict(float), collections.Counter(), 0.0
    for m, tags, f, ts in points(f"{out}/{split}/intervals.lp"):
        if tags.get("gpu_uuid") != uuid or not (a < ts <= b):
            continue
        if m == "model_energy":
            act[tags["model"]] += f.get("active_j", 0.0)
            methods[f.get("method", "?")] += 1
        elif m == "gpu":
            gpu_j += f.get("energy_j", 0.0)
    return act, methods, gpu_j

def iters(log):
    rows = [l.split() for l in open(log)]
    return float(rows[-1][1]) if rows else 0.0

print("== 2. energy counter against integrated power (nvidia-smi, 100 ms), whole run")
pw = []
for l in open(f"{out}/power.csv"):
    try:
        ts, p = l.split(",")
        when = datetime.datetime.strptime(ts.strip(), "%Y/%m/%d %H:%M:%S.%f").timestamp()
        pw.append((when, float(p)))
    except ValueError:
        pass
a, b = t["idle"], t["end"]
integ = sum(p * (t2 - t1) for (t1, p), (t2, _) in zip(pw, pw[1:]) if a < t1 and t2 <= b)
_, _, counter = window("power_model", a, b)
print(f"counter {counter/1e3:.1f} kJ, integrated power {integ/1e3:.1f} kJ, ratio {counter/integ if integ else float('nan'):.4f}")

print("== 3. split methods seen (rows per method), per phase, power_model agent")
for name, nxt in [("idle", "compute"), ("compute", "memcopy"), ("memcopy", "shared"), ("shared", "end")]:
    _, methods, _ = window("power_model", t[name], t[nxt])
    print(f"  {name:<8} {dict(methods)}")

print("== 4. per-model active energy in the shared phase against the solo expectation")
exp = {}
for model, nxt in [("compute", "memcopy"), ("memcopy", "shared")]:
    act, _, _ = window("power_model", t[model], t[nxt])
    jpi = act.get(model, 0.0) / max(iters(f"{out}/{model}-solo.log"), 1.0)
    exp[model] = jpi * iters(f"{out}/{model}-shared.log")
    print(f"  {model}: {jpi:.4f} J per iteration alone")
for split in ["power_model", "sm_util"]:
    act, methods, _ = window(split, t["shared"], t["end"])
    errs = ", ".join(
        f"{m} {act.get(m, 0.0)/1e3:.2f} kJ (expected {e/1e3:.2f}, {100*(act.get(m, 0.0)-e)/e:+.1f}%)"
        for m, e in exp.items() if e > 0)
    print(f"  {split:<12} {errs}   methods {dict(methods)}")
print(f"  expected total {sum(exp.values())/1e3:.2f} kJ vs measured active "
      f"{sum(window('power_model', t['shared'], t['end'])[0].values())/1e3:.2f} kJ "
      "(a gap means the loads slow each other down or the static power estimate is off)")
PY
echo "== power model at the end (state file)"
"$AGENT" check --config "$OUT/power_model/agent.toml" | sed -n '/^Split:/,/^Processes:/p'
