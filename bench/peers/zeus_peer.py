"""Zeus as a peer monitor for inferwatt's benchmark.

Opens one ZeusMonitor measurement window over every GPU from start until its standard
input closes, then prints one JSON line: the tool, its version, the Unix-ms window and
the GPU energy in joules per GPU index. Prints READY once the window is open.
"""

import json
import sys
import time

import zeus
from zeus.device import get_gpus
from zeus.monitor import ZeusMonitor


def main() -> None:
    count = len(get_gpus())
    monitor = ZeusMonitor(gpu_indices=list(range(count)), approx_instant_energy=False)
    start_ms = time.time() * 1000.0
    monitor.begin_window("bench", sync_execution=False)
    print("READY", flush=True)
    sys.stdin.read()
    m = monitor.end_window("bench", sync_execution=False)
    end_ms = time.time() * 1000.0
    print(
        json.dumps(
            {
                "tool": "zeus",
                "version": zeus.__version__,
                "start_unix_ms": start_ms,
                "end_unix_ms": end_ms,
                "gpu_energy_j": sum(m.gpu_energy.values()),
                "per_gpu_j": {str(k): v for k, v in m.gpu_energy.items()},
                "gpu_count": count,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
