#!/usr/bin/env python3
"""Read the simulated GPUs through pynvml (PyPI: nvidia-ml-py) and print what it saw as JSON.

Run with LD_LIBRARY_PATH pointing at a directory holding libnvidia-ml.so.1 (a link to the
simulator's libnvml_sim.so) and FAKE_NVML_SCENARIO naming the scenario file. Every read of
a time-dependent value is bracketed by Unix-ms timestamps so the caller can compare it with
the simulator's ground truth. Exit status 3: pynvml is not installed.
"""

import json
import sys
import time

try:
    import pynvml
except ImportError:
    sys.stderr.write(
        "pynvml is not installed for %s: run `%s -m pip install nvidia-ml-py`\n"
        % (sys.executable, sys.executable)
    )
    sys.exit(3)


def now_ms():
    return time.time_ns() // 1_000_000


def text(value):
    return value.decode() if isinstance(value, bytes) else value


def timed(fn, *args):
    """(before_ms, value or {"error": name}, after_ms)."""
    before = now_ms()
    try:
        value = fn(*args)
    except pynvml.NVMLError as err:
        value = {"error": str(err), "code": err.value}
    return {"before_ms": before, "value": value, "after_ms": now_ms()}


def main():
    window_s = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    pynvml.nvmlInit()
    try:
        count = pynvml.nvmlDeviceGetCount()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        first = [timed(pynvml.nvmlDeviceGetTotalEnergyConsumption, h) for h in handles]
        time.sleep(window_s)
        second = [timed(pynvml.nvmlDeviceGetTotalEnergyConsumption, h) for h in handles]
        devices = []
        for i, h in enumerate(handles):
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            procs = pynvml.nvmlDeviceGetComputeRunningProcesses(h)
            devices.append(
                {
                    "index": i,
                    "name": text(pynvml.nvmlDeviceGetName(h)),
                    "uuid": text(pynvml.nvmlDeviceGetUUID(h)),
                    "power_mw": timed(pynvml.nvmlDeviceGetPowerUsage, h),
                    "energy_mj": [first[i], second[i]],
                    "memory": {"total": mem.total, "used": mem.used, "free": mem.free},
                    "processes": [
                        {"pid": p.pid, "used_memory_bytes": p.usedGpuMemory} for p in procs
                    ],
                }
            )
        out = {
            "driver_version": text(pynvml.nvmlSystemGetDriverVersion()),
            "device_count": count,
            "devices": devices,
        }
    finally:
        pynvml.nvmlShutdown()
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
