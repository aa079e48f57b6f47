"""Shared helpers for the benchmarks: results, timing, machine facts, Django setup."""

from __future__ import annotations

import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@dataclass
class Result:
    """One figure beside its baseline measured in the same run.

    `ratio` is always "ours relative to the baseline" in the direction where higher is better
    (throughput ours/base, or latency base/ours) unless `lower_is_better` says otherwise.
    """

    benchmark: str
    metric: str
    value: float
    baseline: float
    unit: str
    ratio: float
    target: str
    passed: bool | None
    notes: str = ""
    extra: dict = field(default_factory=dict)


def timed(func, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    out = func(*args, **kwargs)
    return time.perf_counter() - start, out


def p95(samples: list[float]) -> float:
    if len(samples) < 2:
        return samples[0] if samples else float("nan")
    return statistics.quantiles(samples, n=100, method="inclusive")[94]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def machine() -> dict[str, str]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_kb = int(next(line for line in Path("/proc/meminfo").read_text().splitlines()
                          if line.startswith("MemTotal")).split()[1])
        memory = f"{mem_kb / 1048576:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        memory = "?"
    info = {"host": platform.node(), "os": platform.platform(), "cpu": cpu, "cores": str(os.cpu_count()),
            "memory": memory, "python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except ImportError:
        pass
    return info


def postgres_url() -> str:
    """The PostgreSQL server named by DATABASE_URL when the run started (only the grid benchmark uses it,
    in a database of its own)."""
    return os.environ.get("BENCH_POSTGRES_URL", "")


def setup_django(data_dir: Path | None = None) -> Path:
    """Configure Django with the test settings and a private data dir (its own SQLite file: a benchmark
    never writes into the database DATABASE_URL names); returns the data dir."""
    if "DATABASE_URL" in os.environ:
        os.environ["BENCH_POSTGRES_URL"] = os.environ.pop("DATABASE_URL")
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="imagineer-bench-"))
    os.environ["IMAGINEER_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imagineer.settings.test")
    import django

    django.setup()
    return data_dir
