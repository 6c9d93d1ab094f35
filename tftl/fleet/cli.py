"""tftl-fleet: federated fine-tuning of one tftl .tflite over Flower.

  tftl-fleet simulate MODEL IMAGES --clients 3 --rounds 5 --val VAL --out run/   (one machine)
  tftl-fleet keys certs/ --host HOST;  tftl-fleet keys dev/ --device NAME        (TLS and device keys)
  tftl-fleet serve MODEL --out run/ --val VAL --rounds 5 --host 0.0.0.0 --certs certs/ --devices pubs/
  tftl-fleet join MODEL IMAGES --server HOST:9092 --certs ca.crt --key dev/NAME.key   (each device)
  (--insecure instead of --certs/--key: 127.0.0.1 only)

`simulate --engine inprocess` (default) runs the clients one after another in this process;
`--engine processes` starts a SuperLink and one SuperNode per client on 127.0.0.1 (Flower's
deployment engine, the same processes `serve` and `join` start).
"""

import argparse
import glob
import json
import os
import subprocess
import sys

from tftl.fleet import deploy, keys, local, server, simulate, wire  # tftl.fleet turns Flower's telemetry off first
from tftl.runtime.checkpoint import CheckpointError
from tftl.runtime.errors import InputError
from tftl.runtime.modelfile import ModelFileError


def _flags():
    """Each flag defined once, in the parent parser of the subcommands that take it:
    (model, images, server side) -> argparse parents."""
    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("model", help="the fleet's .tflite (exported by python -m converters.export; "
                                     "every client uses the server's file)")
    images = argparse.ArgumentParser(add_help=False)
    images.add_argument("images", help="image folder, one subfolder per class label (simulate: split "
                                       "among the clients; join: this device's photos)")
    srv = argparse.ArgumentParser(add_help=False)
    srv.add_argument("--out", required=True, help="folder for checkpoint.npz, history.json and global.tflite")
    srv.add_argument("--val", default="", help="image folder for server-side evaluation after every round")
    srv.add_argument("--rounds", type=int, default=5)
    srv.add_argument("--local-epochs", type=int, default=1)
    srv.add_argument("--lr", type=float, default=5e-4)
    srv.add_argument("--lr-scaling", choices=server.LR_SCALING, default=server.Settings.lr_scaling,
                     help="sqrt: clients train at lr x sqrt(clients in the round)")
    srv.add_argument("--strategy", choices=server.STRATEGIES, default="fedavg")
    srv.add_argument("--server-lr", type=float, default=server.Settings.server_lr,
                     help="fedavg: global += server-lr x (average - global) on the trained weights")
    srv.add_argument("--server-momentum", type=float, default=server.Settings.server_momentum,
                     help="fedavg: server momentum on the averaged update of the trained weights (FedAvgM)")
    srv.add_argument("--bn-stats", choices=server.BN_STATS, default=server.Settings.bn_stats,
                     help="round: the global BN statistics are the clients' batch statistics of the round; "
                          "running: the average of their running averages")
    srv.add_argument("--send", choices=wire.SEND_CHOICES, default="all",
                     help="all: trainable weights + BN statistics; head: the classifier only")
    srv.add_argument("--optimizer", choices=wire.OPTIMIZER_CHOICES, default="reset",
                     help="reset Adam's state when the global weights arrive, or keep each client's own")
    srv.add_argument("--fraction", type=float, default=server.Settings.fraction,
                     help="share of the connected clients sampled each round (at least --min-clients)")
    srv.add_argument("--wait-timeout", type=float, default=server.Settings.wait_timeout,
                     help="seconds a round waits for --min-clients to be connected before it is retried")
    srv.add_argument("--round-timeout", type=float, default=server.Settings.round_timeout,
                     help="seconds to wait for a round's replies (stragglers after it are failures)")
    srv.add_argument("--min-accepted", type=int, default=server.Settings.min_accepted,
                     help="good updates a round needs to count; fewer: the round is retried, never counted")
    srv.add_argument("--round-retries", type=int, default=server.Settings.round_retries,
                     help="retries of a round before the server stops (exit 1; the same command resumes)")
    srv.add_argument("--max-examples", type=int, default=server.Settings.max_examples,
                     help="cap on the example count (FedAvg weight) a client may claim")
    srv.add_argument("--dp-clip", type=float, default=server.Settings.dp_clip,
                     help="differential privacy (fedavg): clip each update to this L2 norm (history.json "
                          "lists each participant's update-norm); 0: off")
    srv.add_argument("--dp-noise", type=float, default=server.Settings.dp_noise,
                     help="noise multiplier: Gaussian noise of sd dp-noise x dp-clip / clients on the average")
    srv.add_argument("--seed", type=int, default=0)
    return model, images, srv


def _settings(a, min_clients) -> server.Settings:
    return server.Settings(model=os.path.abspath(a.model), out=os.path.abspath(a.out),
                           val=os.path.abspath(a.val) if a.val else "", rounds=a.rounds,
                           local_epochs=a.local_epochs, lr=a.lr, lr_scaling=a.lr_scaling, strategy=a.strategy,
                           server_lr=a.server_lr, server_momentum=a.server_momentum, bn_stats=a.bn_stats, send=a.send,
                           optimizer=a.optimizer, min_clients=min_clients, fraction=a.fraction,
                           wait_timeout=a.wait_timeout, round_timeout=a.round_timeout, min_accepted=a.min_accepted,
                           round_retries=a.round_retries, max_examples=a.max_examples, dp_clip=a.dp_clip,
                           dp_noise=a.dp_noise, seed=a.seed)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tftl-fleet", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    model, images, srv = _flags()
    sim = sub.add_parser("simulate", parents=[model, images, srv],
                         help="N clients sharing one image folder, on this machine")
    sim.add_argument("--clients", type=int, default=3)
    sim.add_argument("--shard", choices=("iid", "dirichlet"), default="iid")
    sim.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration (smaller: more skew)")
    sim.add_argument("--engine", choices=("inprocess", "processes"), default="inprocess")
    insecure = argparse.ArgumentParser(add_help=False)
    insecure.add_argument("--insecure", action="store_true",
                          help="no TLS, no device authentication: 127.0.0.1 only, for trying things out")
    serve = sub.add_parser("serve", parents=[model, srv, insecure], help="run the server (SuperLink + ServerApp)")
    serve.add_argument("--min-clients", type=int, default=2, help="clients to wait for each round")
    serve.add_argument("--host", default=deploy.HOST, help="address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=9092)
    serve.add_argument("--certs", default="", help="folder made by tftl-fleet keys DIR --host HOST (TLS)")
    serve.add_argument("--devices", default="",
                       help="folder of device public keys (NAME.pub): only these devices may join")
    join = sub.add_parser("join", parents=[model, images, insecure], help="join a fleet as one client (a SuperNode)")
    join.add_argument("--server", default=f"{deploy.HOST}:9092", help="the server's host:port")
    join.add_argument("--certs", default="", help="the server's ca.crt (verifies the server)")
    join.add_argument("--key", default="", help="this device's private key NAME.key (tftl-fleet keys --device)")
    join.add_argument("--reconnect-wait", type=float, default=300.0,
                      help="seconds Flower retries a lost connection before the SuperNode gives up")
    join.add_argument("--reconnect-tries", type=int, default=5,
                      help="times a SuperNode that exited is started again before join gives up (exit 1)")
    join.add_argument("--work-dir", default="", help="feature cache folder (default: IMAGES/.tftl-fleet)")
    join.add_argument("--threads", type=int, default=1)
    keys_ = sub.add_parser("keys", help="make TLS certificates (--host) or a device key pair (--device)")
    keys_.add_argument("folder")
    keys_.add_argument("--host", action="append", default=[],
                       help="a name or address devices use to reach the server (repeat for several)")
    keys_.add_argument("--device", default="", help="make NAME.key / NAME.pub for one device instead")
    return p


def _check_model(path) -> None:
    """Open the model once up front, so a bad file fails with its one-line reason."""
    local.open_session(os.path.abspath(path))


def _report(out) -> None:
    with open(os.path.join(out, server.HISTORY), encoding="utf-8") as f:
        rounds = json.load(f)["rounds"]
    for r in rounds:
        acc = f"  val_accuracy {r['val_accuracy']:.3f}" if "val_accuracy" in r else ""
        print(f"round {r['round']}{acc}  bytes/client {r['bytes_per_client']}  {r['time']:.1f} s")
    print(f"global model: {os.path.join(out, server.GLOBAL_MODEL)}")


def _with_superlink(out, port, body, *, host=deploy.HOST, tls=None, devices=()) -> int:
    """Hold the lock on `out`, start a SuperLink on host:port (state in out/superlink.db),
    register the `devices` public keys, run body(env, lock) and always stop it."""
    lock = deploy.OutLock(out)
    try:
        home = os.path.join(out, ".flower")
        deploy.write_home(home, f"{deploy.HOST}:{port}", tls)  # the server reaches its SuperLink on loopback
        env = deploy.flower_env(home)
        log = os.path.join(out, "superlink.log")
        database = os.path.join(out, deploy.DATABASE)
        restarted = os.path.exists(database)
        link = deploy.superlink(port, env, log, host=host, database=database, tls=tls,
                                auth=bool(devices))
        lock.add(link)
        try:
            stopped = deploy.stop_unfinished_runs(env, log) if restarted else []
            if stopped:
                print(f"tftl-fleet: stopped the unfinished run(s) {stopped} of a previous serve", file=sys.stderr)
            for public_key in devices:
                deploy.register(public_key, env, log)
            return body(env, lock)
        finally:
            deploy.stop(link)
    finally:
        lock.release()


def _processes(a, settings) -> int:
    """simulate --engine processes: a SuperLink, one SuperNode per client, flwr run."""
    port = deploy.free_port()
    app_dir = deploy.write_app(os.path.join(settings.out, ".app"), settings)

    def body(env, lock):
        nodes = []
        try:
            configs = simulate.node_configs(settings.model, os.path.abspath(a.images), a.clients, shard=a.shard,
                                            alpha=a.alpha, seed=settings.seed,
                                            work_dir=os.path.join(settings.out, "clients"))
            for i, cfg in enumerate(configs):
                nodes.append(deploy.supernode(port, cfg, env, os.path.join(settings.out, f"supernode-{i}.log")))
                lock.add(nodes[-1])
            return deploy.run_app(app_dir, env, os.path.join(settings.out, "run.log"), lock=lock)
        finally:
            for node in nodes:
                deploy.stop(node)

    return _with_superlink(settings.out, port, body)


def simulate_main(a) -> int:
    _check_model(a.model)
    settings = _settings(a, min_clients=a.clients)
    os.makedirs(settings.out, exist_ok=True)
    local.load_samples(a.images, local.open_session(settings.model).labels)  # refuse bad folders up front
    if a.engine == "inprocess":
        simulate.simulate(settings, os.path.abspath(a.images), a.clients, shard=a.shard, alpha=a.alpha)
    else:
        rc = _processes(a, settings)
        if rc:
            print(f"tftl-fleet: the Flower run failed (exit {rc}) — see {settings.out}/run.log", file=sys.stderr)
            return 1
    _report(settings.out)
    return 0


def _security(a, where: str):
    """(deploy.Tls or None, device public keys) from --certs / --devices / --insecure, checked.

    where: the address the process binds (serve) or dials (join); --insecure is loopback only.
    """
    host = where.rpartition(":")[0] if ":" in where else where
    if a.insecure:
        if not deploy.is_loopback(host):
            raise InputError(f"--insecure is for 127.0.0.1 only, not {host} — make certificates with "
                             "tftl-fleet keys and pass --certs")
        print("tftl-fleet: WARNING: --insecure: no TLS and no device authentication; anything that reaches "
              f"{where} can read the model and join. Use it on this machine only.", file=sys.stderr, flush=True)
        return None, []
    certs = getattr(a, "certs", "") or ""
    if not certs:
        raise InputError("pass --certs DIR (made by tftl-fleet keys DIR --host HOST) for TLS, or --insecure "
                         "(127.0.0.1 only)")
    if not os.path.isdir(certs) and not os.path.isfile(certs):
        raise InputError(f"--certs {certs} does not exist — make it with tftl-fleet keys")
    folder = certs if os.path.isdir(certs) else os.path.dirname(certs)
    tls = deploy.Tls(ca=os.path.abspath(os.path.join(folder, keys.CA_CERT)),
                     cert=os.path.abspath(os.path.join(folder, keys.SERVER_CERT)),
                     key=os.path.abspath(os.path.join(folder, keys.SERVER_KEY)))
    devices = sorted(glob.glob(os.path.join(a.devices, "*.pub"))) if getattr(a, "devices", "") else []
    if getattr(a, "devices", "") and not devices:
        raise InputError(f"--devices {a.devices} holds no .pub keys — make them with tftl-fleet keys DIR --device NAME")
    return tls, devices


def serve_main(a) -> int:
    _check_model(a.model)
    settings = _settings(a, min_clients=a.min_clients)
    tls, devices = _security(a, a.host)
    os.makedirs(settings.out, exist_ok=True)
    app_dir = deploy.write_app(os.path.join(settings.out, ".app"), settings)
    security = "--insecure" if tls is None else "--certs DIR/ca.crt --key DEVICE.key"
    print(f"serving on {a.host}:{a.port} ({'TLS' if tls else 'no TLS'}, {len(devices)} registered devices); waiting "
          f"for {a.min_clients} clients (tftl-fleet join {a.model} IMAGES --server HOST:{a.port} {security})",
          flush=True)
    rc = _with_superlink(settings.out, a.port,
                         lambda env, lock: deploy.run_app(app_dir, env, os.path.join(settings.out, "run.log"), lock=lock),
                         host=a.host, tls=tls, devices=devices)
    if rc:
        print(f"tftl-fleet: the Flower run failed (exit {rc}) — see {settings.out}/run.log", file=sys.stderr)
        return 1
    _report(settings.out)
    return 0


def join_main(a) -> int:
    session = local.open_session(os.path.abspath(a.model))
    local.load_samples(a.images, session.labels)  # a folder that is not a fleet label: refused here
    host, _, port = a.server.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--server must be host:port, got {a.server!r}")
    tls = None
    if not a.insecure:
        if not a.certs or not os.path.isfile(a.certs):
            raise InputError("pass --certs CA.crt (the server's ca.crt) to verify the server, or --insecure "
                             "(127.0.0.1 only)")
        tls = deploy.Tls(ca=os.path.abspath(a.certs))
    else:
        _security(a, a.server)
    if a.key and not os.path.isfile(a.key):
        raise InputError(f"--key {a.key} does not exist — make it with tftl-fleet keys DIR --device NAME")
    work = os.path.abspath(a.work_dir or os.path.join(a.images, ".tftl-fleet"))
    home = os.path.join(work, ".flower")
    os.makedirs(home, exist_ok=True)
    cfg = {"model": os.path.abspath(a.model), "data": os.path.abspath(a.images), "work-dir": work,
           "threads": a.threads}
    cmd = deploy.supernode_command(a.server, cfg, tls=tls, key=os.path.abspath(a.key) if a.key else None,
                                   max_wait=a.reconnect_wait)
    return deploy.keep_running(cmd, deploy.flower_env(home), tries=a.reconnect_tries)


def keys_main(a) -> int:
    paths = keys.device_files(a.folder, a.device) if a.device else keys.server_files(
        a.folder, list(dict.fromkeys([*a.host, "127.0.0.1", "localhost"])))
    for what, path in paths.items():
        print(f"{what}: {path}")
    return 0


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    try:
        return {"simulate": simulate_main, "serve": serve_main, "join": join_main, "keys": keys_main}[a.command](a)
    except (InputError, ModelFileError, CheckpointError, wire.UpdateError) as e:
        print(f"tftl-fleet: {e}", file=sys.stderr)
        return 2
    except server.RoundsFailed as e:
        print(f"tftl-fleet: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
