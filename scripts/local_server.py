"""Helpers of the benchmark scripts that start their own server: a free loopback port, a
`vicinity serve` process on a temporary data directory, a keep-alive JSON client per thread,
and percentiles. Standard library only."""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """JSON over HTTP to `host`:`port`, one keep-alive connection per thread; `headers` go with
    every request (an API key, say)."""

    def __init__(self, port, timeout=120, host="127.0.0.1", headers=None):
        self.port = port
        self.timeout = timeout
        self.host = host
        self.headers = dict(headers or {})
        self.local = threading.local()

    def call(self, method, path, body=None, raw_body=None):
        """Sends a request; returns (status, parsed JSON body or None). `raw_body` is sent as
        it is (already encoded JSON)."""
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection(
                self.host, self.port, timeout=self.timeout
            )
        data = raw_body if raw_body is not None else (
            None if body is None else json.dumps(body).encode()
        )
        headers = dict(self.headers)
        if data is not None:
            headers["content-type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except Exception:
            conn.close()
            self.local.conn = None
            raise
        if resp.getheader("connection", "").lower() == "close":
            conn.close()
            self.local.conn = None
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return resp.status, parsed


class Server:
    """`binary serve` on 127.0.0.1 and a data directory of its own (temporary unless given),
    its output in `server.log` there. Environment variables of vicinity set in the caller's
    environment are dropped, so that only `args` configure it; RUST_LOG is `log_level`."""

    def __init__(self, binary, model, args=(), data_dir=None, start_timeout=600, log_level="warn",
                 poll_s=0.2):
        self.binary = binary
        self.model = model
        self.args = list(args)
        self.owns_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="vicinity-bench-")
        self.start_timeout = start_timeout
        self.log_level = log_level
        self.poll_s = poll_s
        self.port = None
        self.proc = None
        self.log = None

    def start(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("VICINITY_")}
        env["RUST_LOG"] = self.log_level
        self.port = free_port()
        self.log = open(os.path.join(self.data_dir, "server.log"), "a")
        cmd = [self.binary, "serve", "--model", self.model, "--data-dir", self.data_dir,
               "--addr", f"127.0.0.1:{self.port}", *self.args]
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        client = Client(self.port, timeout=5)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.binary} exited with {self.proc.returncode}; "
                                   f"see {self.log.name}")
            try:
                if client.call("GET", "/readyz")[0] == 200:
                    return Client(self.port)
            except OSError:
                pass
            time.sleep(self.poll_s)
        self.stop()
        raise RuntimeError(f"server not ready after {self.start_timeout} s; see {self.log.name}")

    def pid(self):
        return self.proc.pid if self.proc else None

    def stop(self, grace_s=30):
        """SIGTERM, then SIGKILL after `grace_s` seconds; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        self.log.close()
        return code

    def remove(self):
        """Stops the server and deletes its data directory if this object created it."""
        self.stop(grace_s=5)
        if self.owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def percentile(sorted_values, q):
    """The `q` quantile (0..1) of an ascending list, nearest rank; NaN when empty."""
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def rss_kib(pid):
    """Resident memory of process `pid` in KiB (VmRSS), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Node(Server):
    """A node of several sharing one PostgreSQL database: `Server` with node id `name`, its
    data directory `work/name`, the tiny model's chunk overlap, readiness polled every 20 ms so
    that `start` times it closely, and info logs in `server.log` (how long each collection took
    to load)."""

    def __init__(self, binary, model, name, database_url, work, args=()):
        data_dir = os.path.join(work, name)
        os.makedirs(data_dir, exist_ok=True)
        super().__init__(binary, model,
                         ["--database-url", database_url, "--node-id", name,
                          "--chunk-overlap", "4", *args],
                         data_dir=data_dir, poll_s=0.02, log_level="info")
        self.name = name
        self.client = None

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        """Starts the node; returns the seconds from the process start to /readyz 200."""
        started = time.monotonic()
        self.client = super().start()
        return time.monotonic() - started

    def stop(self, grace_s=600):
        return super().stop(grace_s)

    def applied(self, collection):
        """The version of `collection` this node has applied, as /cluster says; -1 if none."""
        _, c = self.client.call("GET", "/cluster")
        for n in c["nodes"]:
            if n["id"] == self.name:
                for col in n["collections"]:
                    if col["name"] == collection:
                        return col["applied"]
        return -1
