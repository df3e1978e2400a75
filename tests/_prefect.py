"""A real Prefect server for tests: `prefect server start` on 127.0.0.1 and a free port."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None,
         log: Path | None = None, poll: float = 1.0):
    """`predicate()`'s first truthy value, polled until `timeout` seconds or until `proc` exits;
    else AssertionError with the tail of `log`."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(poll)
    tail = log.read_text()[-4000:] if log is not None and log.exists() else ""
    raise AssertionError(f"{what}: not within {timeout:.0f} s\n{tail}")


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


@contextlib.contextmanager
def prefect_server(tmp_path: Path, env: dict[str, str], timeout: float = 180,
                   **settings: str) -> Iterator[dict[str, str]]:
    """`prefect server start` on 127.0.0.1 and a free port, PREFECT_HOME in `tmp_path`; yields
    `env` (plus `settings`) with PREFECT_API_URL pointing at it, once it answers /health."""
    import httpx

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = dict(env, PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_API_URL=api,
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false",
               PREFECT_LOGGING_LEVEL="INFO", **settings)
    env.pop("PREFECT_API_KEY", None)
    log = tmp_path / "server.log"
    server = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start",
                               "--host", "127.0.0.1", "--port", str(port)],
                              env=env, cwd=tmp_path, stdout=log.open("w"), stderr=subprocess.STDOUT)

    def healthy() -> bool:
        try:
            return httpx.get(f"{api}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait(healthy, timeout, "prefect server start", server, log)
        yield env
    finally:
        stop(server)


def served_deployment(name: str, proc: subprocess.Popen, log: Path, timeout: float = 120):
    """The deployment `name` ("flow/deployment") once the serving process `proc` has registered
    it (the current Prefect settings' server)."""
    from prefect.client.orchestration import get_client

    def found():
        with get_client(sync_client=True) as client:
            try:
                return client.read_deployment_by_name(name)
            except Exception:  # not registered yet
                return None

    return wait(found, timeout, f"the served deployment {name}", proc, log)


def final_state(flow_run_id, proc: subprocess.Popen, log: Path, timeout: float = 240):
    """The flow run's state once it is final (while `proc`, which runs it, is alive)."""
    from prefect.client.orchestration import get_client

    def final():
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(flow_run_id).state
        return state if state is not None and state.is_final() else None

    return wait(final, timeout, f"flow run {flow_run_id}", proc, log)
