"""Real redis-server processes for tests: one server, or a 3-master Redis Cluster, on loopback.

Servers listen on free 127.0.0.1 ports, keep nothing on disk (``--save ""``) and are killed
when the fixture ends. A missing ``redis-server`` fails the test instead of skipping it: CI
installs Debian's ``redis-server`` package (which also brings ``redis-cli``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence

import pytest

#: Seconds a starting server gets to answer PING (a loaded 2-core machine is slow).
START_TIMEOUT = 20.0


def free_port(*, bus: bool = False) -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    With ``bus``, one whose cluster bus port (port + 10000) is free and valid too.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not bus:
            return port
        if port + 10000 > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: apt-get install redis-server (these tests never skip)"
        )
    return path


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1; ``kill()``/``start()`` restart it empty."""

    def __init__(
        self,
        directory: str,
        *,
        port: int | None = None,
        args: Sequence[str] = (),
        tls: tuple[str, str] | None = None,
    ) -> None:
        self.port = port or free_port(bus="--cluster-enabled" in args)
        self.directory = directory
        self.args = list(args)
        self.tls = tls  # (certificate, key) files: TLS only, on ``port``
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start the server (empty) and wait until it answers PING."""
        ports = ["--port", str(self.port)]
        if self.tls is not None:
            ports = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", self.tls[0],
                     "--tls-key-file", self.tls[1], "--tls-auth-clients", "no"]  # fmt: skip
        command = [
            _binary("redis-server"),
            *ports,
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.directory,
            "--daemonize", "no",
            "--loglevel", "warning",
            *self.args,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.directory
        )
        self.wait_ping()
        return self

    def cli(self, *args: str, timeout: float = 10.0) -> str:
        """Run ``redis-cli`` against this server; returns its output."""
        auth = []
        if "--requirepass" in self.args:
            auth = ["-a", self.args[self.args.index("--requirepass") + 1], "--no-auth-warning"]
        if self.tls is not None:
            auth += ["--tls", "--cacert", self.tls[0]]
        done = subprocess.run(
            [_binary("redis-cli"), "-h", "127.0.0.1", "-p", str(self.port), *auth, *args],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        return done.stdout.decode("utf-8", "replace").strip()

    def wait_ping(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.fail(
                    f"redis-server on port {self.port} exited with {self.process.returncode}"
                )
            with contextlib.suppress(subprocess.TimeoutExpired):
                if self.cli("PING", timeout=2.0) == "PONG":
                    return
            time.sleep(0.02)  # a bounded pause between probes of a starting server
        pytest.fail(f"redis-server on port {self.port} did not answer within {START_TIMEOUT} s")

    def kill(self) -> None:
        """SIGKILL the server (its data is lost) and reap it."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)  # a stopped process must be able to die
            process.kill()
            process.wait(10)

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after ``pause()``."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)


@contextlib.contextmanager
def redis_servers(count: int = 1, args: Sequence[str] = ()) -> Iterator[list[RedisServer]]:
    """``count`` started servers, killed on exit."""
    with tempfile.TemporaryDirectory(prefix="phaseflag-redis-") as directory:
        servers: list[RedisServer] = []
        try:
            for _ in range(count):
                sub = tempfile.mkdtemp(dir=directory)
                servers.append(RedisServer(sub, args=args).start())
            yield servers
        finally:
            for server in servers:
                server.kill()


@contextlib.contextmanager
def redis_cluster() -> Iterator[list[RedisServer]]:
    """Three cluster-enabled masters joined by ``redis-cli --cluster create``, killed on exit."""
    args = ["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"]
    with redis_servers(3, args=[*args, "--cluster-config-file", "nodes.conf"]) as servers:
        nodes = [f"127.0.0.1:{s.port}" for s in servers]
        done = subprocess.run(
            [_binary("redis-cli"), "--cluster", "create", *nodes, "--cluster-replicas", "0",
             "--cluster-yes"],
            capture_output=True,
            timeout=60,
            check=False,
        )  # fmt: skip
        if done.returncode != 0:
            pytest.fail(f"redis-cli --cluster create failed: {done.stdout!r} {done.stderr!r}")
        deadline = time.monotonic() + START_TIMEOUT * 2
        while not all("cluster_state:ok" in s.cli("CLUSTER", "INFO") for s in servers):
            if time.monotonic() > deadline:
                pytest.fail("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.05)  # a bounded pause between probes of a forming cluster
        yield servers


@contextlib.contextmanager
def tls_redis_server() -> Iterator[RedisServer]:
    """A TLS-only server with a new self-signed certificate (``server.tls[0]``), killed on exit."""
    with tempfile.TemporaryDirectory(prefix="phaseflag-redis-tls-") as directory:
        cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
        subprocess.run(
            [_binary("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", key, "-out", cert],
            capture_output=True, timeout=60, check=True,
        )  # fmt: skip
        server = RedisServer(directory, tls=(cert, key))
        try:
            yield server.start()
        finally:
            server.kill()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """One empty redis-server for this test."""
    with redis_servers(1) as servers:
        yield servers[0]


# -- fleet workers: real processes each running one PhaseFlagClient --------------------------

WORKER = r"""
import json, os, resource, sys, threading, time
from phaseflag import PhaseFlagClient, EvaluationEvent
from phaseflag.redis import RedisCache

opts = json.loads(sys.argv[1])
lock = threading.Lock()

def say(**fields):
    with lock:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()

cache = RedisCache(opts["redis"], lease_time=opts["lease"], connect_timeout=0.5,
                   read_timeout=0.5)
client = PhaseFlagClient(base_url=opts["base_url"], api_key=opts["api_key"],
                         polling_interval=opts["interval"], cache=cache,
                         fetch_mode=opts.get("fetch_mode"), event_flush_interval=0.2)
client.on("change", lambda e: say(event="version", version=e.current_version,
                                  source=e.source, t=time.time()))
client.start()
say(event="started", pid=os.getpid())

def status():
    s = client.status()
    started = time.perf_counter()
    for _ in range(1000):
        client.get_boolean_value("flag", False)
    read_us = (time.perf_counter() - started) * 1000
    usage = resource.getrusage(resource.RUSAGE_SELF)
    say(event="status", version=s.ruleset_version, source=s.ruleset_source, leader=s.leader,
        ready=s.ready, cpu=usage.ru_utime + usage.ru_stime, rss_kb=usage.ru_maxrss,
        read_us=read_us, value=client.get_boolean_value("flag", False))

def leader_watch():
    last = None
    while True:
        now = client.status().leader
        if now != last:
            say(event="leader", leader=now, t=time.time())
            last = now
        time.sleep(0.02)

threading.Thread(target=leader_watch, daemon=True).start()
for line in sys.stdin:
    command = line.strip()
    if command == "status":
        status()
    elif command == "event":
        client.track_event(EvaluationEvent("clicked", user_id="u1"))
        say(event="flushed", ok=client.flush_events())
    elif command == "stop":
        started = time.monotonic()
        client.stop()
        say(event="stopped", seconds=time.monotonic() - started)
        break
"""


class Worker:
    """One worker process; its JSON lines update ``version``/``leader``/``last`` as they come."""

    def __init__(self, options: dict[str, object]) -> None:
        import json
        import sys
        import threading

        env = {k: v for k, v in os.environ.items() if not k.startswith("PHASEFLAG_")}
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER, json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self.version: int | None = None
        self.leader: bool | None = None
        self.lines: list[dict[str, object]] = []
        self.cond = threading.Condition()
        self._json = json
        self._reader = threading.Thread(target=self._read, name="fleet-worker-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            try:
                line = self._json.loads(raw)
            except ValueError:
                continue
            with self.cond:
                self.lines.append(line)
                if line["event"] == "version":
                    self.version = int(line["version"])  # type: ignore[call-overload]
                elif line["event"] == "leader":
                    self.leader = bool(line["leader"])
                self.cond.notify_all()

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        self.process.stdin.flush()

    def ask(self, command: str, reply: str, timeout: float = 30.0) -> dict[str, object]:
        """Send ``command`` and wait for the next line of event ``reply``."""
        with self.cond:
            seen = len(self.lines)
        self.send(command)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines[seen:]:
                    if line["event"] == reply:
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    pytest.fail(f"worker {self.process.pid} did not answer {command!r}")
                self.cond.wait(left)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self._reader.join(5)


@contextlib.contextmanager
def fleet_workers(count: int, options: dict[str, object]) -> Iterator[list[Worker]]:
    """``count`` worker processes with the same options, killed on exit."""
    workers: list[Worker] = []
    try:
        for _ in range(count):
            workers.append(Worker(options))
        yield workers
    finally:
        for worker in workers:
            worker.kill()


@contextlib.contextmanager
def redis_sentinel(master: RedisServer, name: str = "mymaster") -> Iterator[int]:
    """A Redis Sentinel (``redis-server --sentinel``) watching ``master``; yields its port."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="phaseflag-sentinel-") as directory:
        config = os.path.join(directory, "sentinel.conf")
        with open(config, "w", encoding="ascii") as handle:
            handle.write(
                f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                f"sentinel monitor {name} 127.0.0.1 {master.port} 1\n"
            )
        process = subprocess.Popen(
            [_binary("redis-server"), config, "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            probe = RedisServer(directory, port=port)
            deadline = time.monotonic() + START_TIMEOUT
            while str(master.port) not in probe.cli("SENTINEL", "get-master-addr-by-name", name):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("redis sentinel did not start")
                time.sleep(0.05)  # a bounded pause between probes of a starting sentinel
            yield port
        finally:
            process.kill()
            process.wait(10)
