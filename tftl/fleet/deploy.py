"""Real processes on loopback with Flower's deployment engine: SuperLink, SuperNodes, `flwr run`.

`serve` starts a SuperLink bound to 127.0.0.1, writes a Flower App folder whose components are
`tftl.fleet.server:app` / `tftl.fleet.client:app` and whose config is the run's settings,
submits it with `flwr run`, streams its log and stops the SuperLink when the run ends.
`join` starts a SuperNode whose node config names the model and the device's image folder.

Flower's telemetry and update checks are off (FLWR_TELEMETRY_ENABLED=0,
FLWR_DISABLE_UPDATE_CHECK=1) unless the caller's environment sets them, and the SuperLink never
installs app dependencies at run time (offline fleets).
"""

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from tftl.fleet import QUIET_FLOWER

HOST = "127.0.0.1"


def flower_env(home) -> dict:
    """The environment of every Flower process: telemetry/update checks off unless set, own FLWR_HOME."""
    env = dict(os.environ)
    for key, value in QUIET_FLOWER.items():
        env.setdefault(key, value)
    env["FLWR_HOME"] = os.fspath(home)
    # Flower starts its helpers (flower-superexec, flwr-serverapp, flwr-clientapp) from PATH.
    env["PATH"] = os.pathsep.join(p for p in (os.path.dirname(sys.executable), env.get("PATH")) if p)
    # The ServerApp / ClientApp subprocesses import tftl from wherever this process did.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _tool(name) -> str:
    """A Flower console script next to this interpreter (a venv), else on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), name)
    found = here if os.path.exists(here) else shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found — install the fleet extra: pip install 'tftl[fleet]'")
    return found


def toml_value(value) -> str:
    """A TOML scalar (JSON's string escapes are valid TOML basic-string escapes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


def write_app(folder, settings) -> str:
    """A Flower App folder (pyproject.toml) whose run config is `settings` (server.Settings)."""
    os.makedirs(folder, exist_ok=True)
    config = "\n".join(f"{f.name.replace('_', '-')} = {toml_value(getattr(settings, f.name))}"
                       for f in dataclasses.fields(settings))
    text = f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "tftl-fleet-app"
version = "1.0.0"
dependencies = []

[tool.flwr.app]
publisher = "tftl"

[tool.flwr.app.components]
serverapp = "tftl.fleet.server:app"
clientapp = "tftl.fleet.client:app"

[tool.flwr.app.config]
{config}
"""
    with open(os.path.join(folder, "pyproject.toml"), "w", encoding="utf-8") as f:
        f.write(text)
    return folder


def write_home(home, port) -> None:
    """FLWR_HOME/config.toml naming the local SuperLink as the default connection."""
    os.makedirs(home, exist_ok=True)
    with open(os.path.join(home, "config.toml"), "w", encoding="utf-8") as f:
        f.write(f'[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = "{HOST}:{port}"\ninsecure = true\n')


def start(cmd, env, log_path) -> subprocess.Popen:
    """A child in its own process group (so stop() ends it and everything it started)."""
    log = open(log_path, "ab")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    proc.log = log
    return proc


def stop(proc, grace=10.0) -> None:
    """SIGTERM the child's process group, SIGKILL after `grace` seconds."""
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    proc.log.close()


def wait_port(port, proc, seconds=60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the Flower process exited with {proc.returncode} before listening on {port} — "
                               f"see its log {proc.log.name}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return
        time.sleep(0.3)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {seconds:.0f} s — see {proc.log.name}")


def superlink(port, env, log_path) -> subprocess.Popen:
    proc = start([_tool("flower-superlink"), "--insecure", "--disable-runtime-dependency-installation",
                  "--host", HOST, "--port", str(port)], env, log_path)
    wait_port(port, proc)
    return proc


def supernode(server_port, node_config: dict, env, log_path) -> subprocess.Popen:
    """A SuperNode on loopback; node_config values are written as TOML scalars."""
    text = " ".join(f"{k}={toml_value(v)}" for k, v in node_config.items())
    return start([_tool("flower-supernode"), "--insecure", "--superlink", f"{HOST}:{server_port}",
                  "--host", HOST, "--port", str(free_port()), "--node-config", text], env, log_path)


def run_app(app_dir, env, log_path, timeout=None) -> int:
    """`flwr run APP local --stream`; returns its exit code (its output goes to log_path)."""
    with open(log_path, "ab") as log:
        return subprocess.run([_tool("flwr"), "run", os.fspath(app_dir), "local", "--stream"], env=env,
                              stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              timeout=timeout).returncode
