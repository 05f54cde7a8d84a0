"""CodeCarbon as a peer monitor for inferwatt's benchmark.

Tracks the machine with OfflineEmissionsTracker (1-s measure interval) from start until
its standard input closes, then prints one JSON line: the tool, its version, the Unix-ms
window it measured and its GPU energy in joules. Prints READY once tracking started, so
the caller can read its CPU time over the steady state only.
"""

import json
import sys
import time

import codecarbon
from codecarbon import OfflineEmissionsTracker


def main() -> None:
    tracker = OfflineEmissionsTracker(
        country_iso_code="DEU",
        measure_power_secs=1,
        save_to_file=False,
        log_level="error",
        tracking_mode="machine",
        allow_multiple_runs=True,
    )
    start_ms = time.time() * 1000.0
    tracker.start()
    print("READY", flush=True)
    sys.stdin.read()
    tracker.stop()
    end_ms = time.time() * 1000.0
    data = tracker.final_emissions_data
    print(
        json.dumps(
            {
                "tool": "codecarbon",
                "version": codecarbon.__version__,
                "start_unix_ms": start_ms,
                "end_unix_ms": end_ms,
                "gpu_energy_j": data.gpu_energy * 3.6e6,
                "gpu_count": data.gpu_count,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
