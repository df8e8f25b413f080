"""Benchmarks: mpbluetooth's ``BLE`` facade against raw Bumble on an identical simulated link.

Run ``python -m benchmarks`` from the repository root (``--quick`` for a run of about a
minute). Every workload runs twice in the same process, once through MicroPython's
synchronous API (``mpbluetooth.BLE``) and once through Bumble's own async API, on the same
kind of link: our ``SimLink`` with our ``SimController`` behind each Bumble ``Host``, on the
same asyncio loop thread. See ``benchmarks/README.md`` for what each figure means.

This package is never collected by pytest and never runs in CI.
"""

import os

# The benchmarks measure the facade's CPU cost against raw Bumble, so every simulated link
# here (and in the child processes and hubs they start) runs in instant timing: air timing
# would measure connection intervals instead (docs/simulation.md).
os.environ["MPBLUETOOTH_SIM_TIMING"] = "instant"
