"""What the numbers were measured on."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from importlib import metadata

from bench.procs import kubectl_version

PACKAGES = ("uvicorn", "uvloop", "httptools", "daphne", "twisted", "httpx", "httpcore", "aiohttp", "django")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    return 0.0


def _os_name() -> str:
    try:
        release = platform.freedesktop_os_release()
        return f"{release.get('PRETTY_NAME', 'Linux')}, kernel {platform.release()}"
    except OSError:
        return f"{platform.system()} {platform.release()}"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe() -> dict:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "python": sys.version.split()[0],
        "kubectl": kubectl_version(),
        "os": _os_name(),
        "packages": {name: _version(name) for name in PACKAGES},
    }


_PROBE_DOCUMENT = json.dumps({"items": [{"name": f"item-{i}", "value": i} for i in range(200)]})


def speed_probe() -> float:
    """CPU milliseconds of one fixed piece of pure Python (an integer loop and JSON round trips, the kind
    of work the gateway does): the same work on this shared machine has taken from 0.7 to 1.3 times its
    usual time minutes apart, with nothing else of ours running, so a run's figures are read against it."""
    started = time.process_time()
    total = 0
    for i in range(300_000):
        total += i
    for _ in range(300):
        json.dumps(json.loads(_PROBE_DOCUMENT))
    return round((time.process_time() - started) * 1000, 1)
