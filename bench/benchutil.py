"""What the bench scripts share: a line describing the machine they ran on."""

from __future__ import annotations

import contextlib
import os
import platform


def machine_line(load: float) -> str:
    """CPU model, cores, RAM and the load average before the runs."""
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    ram = "unknown"
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        kib = next((int(ln.split()[1]) for ln in f if ln.startswith("MemTotal:")), None)
        ram = f"{kib / 2**20:.1f} GiB" if kib else ram
    return (f"CPU: {cpu}; os.cpu_count() = {os.cpu_count()}; RAM: {ram}; load average (1 min) "
            f"before the runs: {load:.2f}")
