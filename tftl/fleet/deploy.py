"""Real processes with Flower's deployment engine: SuperLink, SuperNodes, `flwr run`.

`serve` takes the lock on its out/ folder, starts a SuperLink (TLS with `tftl-fleet keys`
certificates and SuperNode authentication, or `--insecure` on loopback only) whose state is a
database file in out/, writes a Flower App folder whose components are `tftl.fleet.server:app`
/ `tftl.fleet.client:app` and whose config is the run's settings, submits it with `flwr run`,
and stops the SuperLink when the run ends. `join` starts a SuperNode whose node config names
the model and the device's image folder, and starts it again when it exits.

Every child stays in the server's process group and, on Linux, is killed by the kernel when
the server dies (PR_SET_PDEATHSIG), even by kill -9; the SuperLink's own helpers (SuperExec,
ServerApp) watch the SuperLink's pid and end with it. The lock file records the children,
so a restart after a crash also ends any that are left (platforms without PDEATHSIG).

Flower's telemetry and update checks are off (FLWR_TELEMETRY_ENABLED=0,
FLWR_DISABLE_UPDATE_CHECK=1) unless the caller's environment sets them, and the SuperLink never
installs app dependencies at run time (offline fleets).
"""

import contextlib
import ctypes
import dataclasses
import ipaddress
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from tftl.fleet import QUIET_FLOWER
from tftl.runtime import files
from tftl.runtime.errors import InputError

HOST = "127.0.0.1"
LOCK = "serve.lock"          # in out/: held (flock) while a serve runs; lists its children
DATABASE = "superlink.db"    # in out/: the SuperLink's state (registered and connected nodes, runs)
PR_SET_PDEATHSIG = 1


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _die_with_parent() -> None:
    """In the child before exec (Linux): the kernel SIGKILLs it when its parent dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now (as Flower's, with SO_REUSEADDR: a closed
    connection's TIME_WAIT does not count, a listener does)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _cmdlines():
    """(pid, cmdline bytes) of every process we can read (Linux /proc; nothing elsewhere)."""
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError), open(f"/proc/{entry}/cmdline", "rb") as f:
                    yield int(entry), f.read()


def end_flower_processes(chosen, why: str) -> list:
    """SIGKILL the Flower processes (flower-*, flwr*) for which chosen(pid, cmdline) holds."""
    ended = []
    for pid, cmdline in _cmdlines():
        if pid != os.getpid() and (b"flwr" in cmdline or b"flower" in cmdline) and chosen(pid, cmdline):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                ended.append(pid)
    if ended:
        print(f"tftl-fleet: ended {len(ended)} Flower process(es) {why}: {ended}", file=sys.stderr, flush=True)
    return ended


class OutLock:
    """An exclusive flock on out/serve.lock for the life of a serve; the file lists its children.

    A second serve on the same out/ is refused (InputError, one line). A serve that finds the
    lock free but children listed by a dead one ends those children first.
    """

    def __init__(self, out):
        self.path = os.path.join(out, LOCK)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not files._lock(self.fd):
            os.close(self.fd)
            raise InputError(f"{out} is in use by another tftl-fleet serve (lock {self.path}) — stop it or "
                             "pass another --out")
        self.end_orphans()
        self.children = []

    def end_orphans(self) -> list:
        """SIGKILL the Flower processes a crashed serve listed; returns their pids."""
        try:
            listed = json.loads(os.pread(self.fd, 1 << 16, 0) or b"{}").get("children", [])
        except ValueError:
            listed = []
        return end_flower_processes(lambda pid, cmdline: pid in listed, "left by a crashed serve")

    def add(self, proc) -> None:
        self.children.append(proc.pid)
        data = json.dumps({"pid": os.getpid(), "children": self.children}).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)
        os.fsync(self.fd)

    def release(self) -> None:
        os.ftruncate(self.fd, 0)
        os.close(self.fd)


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


@dataclasses.dataclass(frozen=True)
class Tls:
    """A SuperLink's TLS files (`tftl-fleet keys`): the CA certificate clients verify it with,
    its certificate and key. None everywhere means --insecure (loopback only)."""

    ca: str
    cert: str = ""
    key: str = ""


def write_home(home, address, tls: Tls = None) -> None:
    """FLWR_HOME/config.toml naming the SuperLink at `address` as the default connection."""
    os.makedirs(home, exist_ok=True)
    security = f"root-certificates = {json.dumps(tls.ca)}" if tls else "insecure = true"
    with open(os.path.join(home, "config.toml"), "w", encoding="utf-8") as f:
        f.write(f'[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = "{address}"\n{security}\n')


def start(cmd, env, log_path) -> subprocess.Popen:
    """A child in this process's group, killed by the kernel if this process dies (Linux)."""
    log = open(log_path, "ab")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    proc.log = log
    return proc


def stop(proc, grace=10.0) -> None:
    """SIGTERM the child (Flower's processes end their own helpers), SIGKILL after `grace` seconds."""
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
    proc.log.close()


def wait_port(host, port, proc, seconds=60.0) -> None:
    """Until `proc` listens on host:port. Call it only on a port that was free before `proc`
    started, so the listener is `proc` (port_free), and `proc` must still run afterwards."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the Flower process exited with {proc.returncode} before listening on {port} — "
                               f"see its log {proc.log.name}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            time.sleep(0.5)
            if proc.poll() is None:
                return
        time.sleep(0.3)
    raise RuntimeError(f"nothing listens on {host}:{port} after {seconds:.0f} s — see {proc.log.name}")


def superlink(port, env, log_path, *, host=HOST, database=None, tls: Tls = None, auth=False) -> subprocess.Popen:
    """A SuperLink on host:port; refused (InputError) when something already listens there.

    database: its state file (None: in memory); tls: its certificates (None: --insecure);
    auth: SuperNode authentication (only registered public keys may connect).
    """
    if not port_free(host, port):
        raise InputError(f"{host}:{port} is already in use (another SuperLink, or a serve still running?) — "
                         "stop it or pass another --port")
    # No SuperLink listens on the port, so helpers still pointed at it (a killed SuperLink's
    # SuperExec and ServerApp, which would otherwise run on until they notice) are orphans.
    runtime = f"--runtime-api-address\0{HOST}:{port}\0".encode()
    end_flower_processes(lambda pid, cmdline: runtime in cmdline, f"left by a SuperLink on port {port}")
    cmd = [_tool("flower-superlink"), "--disable-runtime-dependency-installation", "--host", host, "--port",
           str(port)]
    cmd += ["--ssl-ca-certfile", tls.ca, "--ssl-certfile", tls.cert, "--ssl-keyfile", tls.key] if tls else ["--insecure"]
    cmd += ["--database", os.fspath(database)] if database else []
    cmd += ["--enable-supernode-auth"] if auth else []
    proc = start(cmd, env, log_path)
    try:
        wait_port(HOST if host in ("0.0.0.0", "::") else host, port, proc)
    except RuntimeError:
        stop(proc)
        raise
    return proc


def _flwr(args, env, log_path, timeout=120) -> tuple:
    """(exit code, stdout) of `flwr ARGS` against FLWR_HOME's SuperLink; stderr goes to log_path."""
    with open(log_path, "ab") as log:
        proc = subprocess.run([_tool("flwr"), *map(os.fspath, args)], env=env, stdout=subprocess.PIPE, stderr=log,
                              stdin=subprocess.DEVNULL, timeout=timeout)
    with open(log_path, "ab") as log:
        log.write(proc.stdout)
    return proc.returncode, proc.stdout.decode("utf-8", "replace")


def register(public_key, env, log_path) -> None:
    """Register a device's public key with the SuperLink of FLWR_HOME (`flwr supernode register`);
    a key the SuperLink database already holds (a restarted serve) is fine."""
    rc, text = _flwr(["supernode", "register", public_key, "local", "--format", "json"], env, log_path)
    if rc and "already in use" not in text:
        raise InputError(f"could not register {public_key} with the SuperLink (exit {rc}) — see {log_path}")


def stop_unfinished_runs(env, log_path) -> list:
    """Stop the runs a restarted SuperLink found unfinished in its database (a crashed serve's),
    so that only the run this serve submits trains (`flwr ls`, `flwr stop`); returns their ids."""
    rc, text = _flwr(["ls", "local", "--format", "json"], env, log_path)
    try:
        runs = json.loads(text[text.index("{"):]).get("runs", []) if rc == 0 else []
    except ValueError:
        runs = []
    old = [r["run-id"] for r in runs if not str(r.get("status", "")).startswith("finished")]
    for run_id in old:
        _flwr(["stop", run_id, "local"], env, log_path)
    return old


def supernode(server_port, node_config: dict, env, log_path) -> subprocess.Popen:
    """A SuperNode on loopback; node_config values are written as TOML scalars."""
    text = " ".join(f"{k}={toml_value(v)}" for k, v in node_config.items())
    return start([_tool("flower-supernode"), "--insecure", "--superlink", f"{HOST}:{server_port}",
                  "--host", HOST, "--port", str(free_port()), "--node-config", text], env, log_path)


def supernode_command(superlink_address, node_config: dict, *, tls: Tls = None, key=None,
                      max_wait=None) -> list:
    """`flower-supernode` for a device: TLS verified with tls.ca (else --insecure), authenticated
    with its private `key` when given; Flower itself retries a lost connection for `max_wait` s."""
    text = " ".join(f"{k}={toml_value(v)}" for k, v in node_config.items())
    cmd = [_tool("flower-supernode"), "--superlink", superlink_address, "--host", HOST, "--port", str(free_port()),
           "--node-config", text]
    cmd += ["--root-certificates", tls.ca] if tls else ["--insecure"]
    cmd += ["--auth-supernode-private-key", os.fspath(key)] if key else []
    cmd += ["--max-wait-time", str(float(max_wait))] if max_wait else []
    return cmd


def run_app(app_dir, env, log_path, lock=None) -> int:
    """`flwr run APP local --stream`; returns its exit code (its output goes to log_path)."""
    proc = start([_tool("flwr"), "run", os.fspath(app_dir), "local", "--stream"], env, log_path)
    if lock is not None:
        lock.add(proc)
    try:
        return proc.wait()
    finally:
        stop(proc)


# Flower 1.42's SuperNode logs this when its connection retries (--max-wait-time) run out, and
# then hangs instead of exiting (flwr/supercore/retry/http_retry.py). The one place tftl reads
# Flower's log text; tests/test_fleet.py's join test pins it.
SUPERNODE_GAVE_UP = b"Giving up reconnection"


def _supervise(cmd, env) -> int:
    """Run one SuperNode, its log echoed to stderr; end it when it gives up reconnecting.

    Its output is read in a thread: the SuperNode's own helpers inherit the pipe, so it may
    stay open after the SuperNode exited."""
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    proc.log = proc.stdout
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        while True:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                if proc.poll() is not None:
                    return proc.returncode
                continue
            sys.stderr.buffer.write(line)
            sys.stderr.flush()
            if SUPERNODE_GAVE_UP in line:
                stop(proc)
                return 1
    except KeyboardInterrupt:
        stop(proc)
        raise


def keep_running(cmd, env, *, tries: int, pause=5.0) -> int:
    """Run `cmd` (a SuperNode) and start it again each time it exits or gives up reconnecting,
    up to `tries` times; then give up with exit 1 (a supervisor sees a failure). Ctrl-C: 130."""
    for attempt in range(tries + 1):
        try:
            rc = _supervise(cmd, env)
        except KeyboardInterrupt:
            return 130
        if attempt < tries:
            print(f"tftl-fleet: the SuperNode stopped ({rc}); starting it again in {pause:g} s "
                  f"({attempt + 1} of {tries})", file=sys.stderr, flush=True)
            time.sleep(pause)
    print(f"tftl-fleet: gave up: the SuperNode stopped {tries + 1} times (last exit {rc}) — is the server up, "
          "and are --certs and --key the fleet's?", file=sys.stderr, flush=True)
    return 1
