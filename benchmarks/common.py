"""Shared helpers for the benchmark scripts: hardware naming and merging results into one JSON."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path

import jax

RESULTS = Path(__file__).resolve().parent / "results"


def hardware_name() -> str:
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return f"cpu-{platform.machine()}-{os.cpu_count()}cores"
    kind = getattr(dev, "device_kind", dev.platform).lower().replace(" ", "-")
    return f"{dev.platform}-{kind}-x{jax.device_count()}"


def hardware_info() -> dict:
    info = {
        "name": hardware_name(),
        "platform": jax.devices()[0].platform,
        "device_kind": getattr(jax.devices()[0], "device_kind", ""),
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "processor": _cpu_model(),
    }
    try:
        info["load_average_at_start"] = os.getloadavg()[0]
    except OSError:
        pass
    return info


def _cpu_model() -> str:
    from pinn.hardware import cpu_name

    return cpu_name()


def versions() -> dict:
    import flax
    import optax

    return {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
            "python": platform.python_version()}


def merge_results(key: str, value, *, path: Path | None = None) -> Path:
    """Read-modify-write `benchmarks/results/<hardware>.json`, replacing `key` (atomic write)."""
    from pinn.io import write_json

    path = path or RESULTS / f"{hardware_name()}.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = value
    data["hardware"] = hardware_info()
    data["versions"] = versions()
    data.setdefault("dates", {})[key] = _dt.date.today().isoformat()
    write_json(path, data)
    return path
