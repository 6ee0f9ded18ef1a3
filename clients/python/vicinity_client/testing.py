"""Run a vicinity server for tests: :class:`LocalServer`.

>>> from vicinity_client.testing import LocalServer
>>> with LocalServer() as server, server.client() as client:     # doctest: +SKIP
...     client.create_collection("docs")

The server listens on a free port of 127.0.0.1, keeps its data in a temporary directory, and
is configured by its arguments alone: ``VICINITY_*`` variables of the caller's environment are
not passed on.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import httpx

from ._async_client import AsyncVicinity
from ._client import Vicinity

__all__ = [
    "AsyncRecordingTransport",
    "LocalServer",
    "RecordingTransport",
    "find_binary",
    "find_model",
]

#: The repository's tiny test model, relative to the repository root.
_TINY_BERT = Path("tests") / "fixtures" / "tiny-bert"

#: Its passages hold at most 30 tokens, less than the server's default overlap of 32.
_TINY_BERT_ARGS = ("--chunk-overlap", "4")

#: How often a server that lost the race for its port is started again on another.
_PORT_ATTEMPTS = 3


def _walk_up(start: Path) -> List[Path]:
    start = start.resolve()
    return [start, *start.parents]


def find_binary() -> str:
    """The ``vicinity`` binary: env ``VICINITY_BIN``, else ``target/debug/vicinity`` of the
    repository around the current directory, else ``vicinity`` on PATH."""
    env = os.environ.get("VICINITY_BIN")
    if env:
        return env
    for d in _walk_up(Path.cwd()):
        candidate = d / "target" / "debug" / "vicinity"
        if (d / "Cargo.toml").is_file() and candidate.is_file():
            return str(candidate)
    on_path = shutil.which("vicinity")
    if on_path:
        return on_path
    raise FileNotFoundError(
        "no vicinity binary: set VICINITY_BIN, build the repository (target/debug/vicinity), "
        "or put vicinity on PATH"
    )


def find_model() -> Optional[str]:
    """The model to serve: env ``VICINITY_TEST_MODEL``, else the repository's
    ``tests/fixtures/tiny-bert`` found above the current directory, else ``None`` (the
    server's default model)."""
    env = os.environ.get("VICINITY_TEST_MODEL")
    if env:
        return env
    for d in _walk_up(Path.cwd()):
        candidate = d / _TINY_BERT
        if (d / "Cargo.toml").is_file() and (candidate / "config.json").is_file():
            return str(candidate)
    return None


def _is_tiny_bert(model: str) -> bool:
    parts = Path(model).resolve().parts
    return tuple(parts[-3:]) == _TINY_BERT.parts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _terminate(process: "subprocess.Popen[bytes]", grace: float) -> Optional[int]:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


class LocalServer:
    """``vicinity serve`` on a free 127.0.0.1 port with a data directory of its own, as a
    context manager: entering starts it and waits for ``/readyz``; leaving stops it (SIGTERM,
    then SIGKILL after ``stop_timeout``) and removes the temporary data directory.

    Args:
        binary: the executable; default :func:`find_binary`.
        model: a model directory or hub id; default :func:`find_model`. The repository's
            ``tiny-bert`` fixture gets ``--chunk-overlap 4`` unless ``args`` set an overlap.
        args: more arguments of ``vicinity serve`` (``["--max-text-bytes", "64"]``...).
        api_key: a read-write API key the server requires (passed in its environment, not on
            its command line), and that :meth:`client` sends.
        read_only_api_key: a read-only API key the server accepts as well.
        data_dir: a data directory to use and keep (to restart on the same data); default a
            temporary one, removed on exit.
        start_timeout: seconds to wait for ``/readyz``.
        stop_timeout: seconds between SIGTERM and SIGKILL.
        log_level: ``RUST_LOG`` of the server; its output goes to ``log_path``.
        env: more environment variables of the server.

    :meth:`stop` and :meth:`start` may be called again in between, to restart the server on
    the same data directory (and a new port).
    """

    def __init__(
        self,
        binary: Optional[str] = None,
        model: Optional[str] = None,
        args: Sequence[str] = (),
        api_key: Optional[str] = None,
        *,
        read_only_api_key: Optional[str] = None,
        data_dir: Optional[str] = None,
        start_timeout: float = 120.0,
        stop_timeout: float = 30.0,
        log_level: str = "warn",
        env: Optional[Mapping[str, str]] = None,
    ) -> None:
        if isinstance(args, str):
            raise TypeError("args must be a list of arguments, not one string")
        self.binary = binary or find_binary()
        self.model = model if model is not None else find_model()
        self.args: List[str] = [str(a) for a in args]
        if self.model is not None and _is_tiny_bert(self.model) and not any(
            a == "--chunk-overlap" or a.startswith("--chunk-overlap=") for a in self.args
        ):
            self.args.extend(_TINY_BERT_ARGS)
        self.api_key = api_key
        self.read_only_api_key = read_only_api_key
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.log_level = log_level
        self.extra_env = dict(env or {})
        self._owns_dir = data_dir is None
        self.data_dir: Optional[str] = data_dir
        self.port: Optional[int] = None
        self.process: Optional["subprocess.Popen[bytes]"] = None
        self._finalizer: Optional["weakref.finalize[..., Any]"] = None

    @property
    def url(self) -> str:
        """The server's base URL, ``http://127.0.0.1:<port>``."""
        if self.port is None:
            raise RuntimeError("the server has not been started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> str:
        """The file the server's output goes to."""
        if self.data_dir is None:
            raise RuntimeError("the server has not been started")
        return os.path.join(self.data_dir, "server.log")

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's output, for failure messages."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - chars))
                return f.read().decode("utf-8", errors="replace")
        except (OSError, RuntimeError):
            return ""

    def _env(self) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VICINITY_")}
        env["RUST_LOG"] = self.log_level
        if self.api_key is not None:
            env["VICINITY_API_KEY"] = self.api_key
        if self.read_only_api_key is not None:
            env["VICINITY_READ_ONLY_API_KEY"] = self.read_only_api_key
        env.update(self.extra_env)
        return env

    def start(self) -> "LocalServer":
        """Starts the server and waits until ``/readyz`` answers 200; raises RuntimeError with
        the end of its log when it exits or is not ready in time."""
        if self.process is not None:
            raise RuntimeError("the server is already running")
        if self.data_dir is None:
            self.data_dir = tempfile.mkdtemp(prefix="vicinity-test-")
        os.makedirs(self.data_dir, exist_ok=True)
        for attempt in range(_PORT_ATTEMPTS):
            self.port = _free_port()
            cmd = [self.binary, "serve", "--data-dir", self.data_dir,
                   "--addr", f"127.0.0.1:{self.port}"]
            if self.model is not None:
                cmd += ["--model", self.model]
            cmd += self.args
            log_offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    cmd, env=self._env(), stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT,
                )
            self._finalizer = weakref.finalize(self, _terminate, self.process, 5.0)
            try:
                self._wait_ready()
                return self
            except _Exited:
                self._reap()
                with open(self.log_path, "rb") as f:
                    f.seek(log_offset)
                    output = f.read().decode("utf-8", errors="replace")
                # Another process may take the free port between our probe and the server's
                # bind; that alone is worth another port.
                if "Address already in use" in output and attempt + 1 < _PORT_ATTEMPTS:
                    continue
                raise RuntimeError(
                    f"{self.binary} serve exited before it was ready; its output:\n{output}"
                ) from None
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout
        # trust_env=False: a proxy from the environment must not stand between us and the
        # loopback address.
        with httpx.Client(base_url=self.url, timeout=2.0, trust_env=False) as probe:
            while True:
                if self.process.poll() is not None:
                    raise _Exited()
                try:
                    if probe.get("/readyz").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the server was not ready after {self.start_timeout} s; the end of its "
                        f"log:\n{self.log_tail()}"
                    )
                time.sleep(0.05)

    def _reap(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        self.process = None

    def stop(self) -> Optional[int]:
        """Stops the server (SIGTERM, then SIGKILL after ``stop_timeout``) and returns its exit
        status; the data directory stays until :meth:`close`."""
        process = self.process
        if process is None:
            return None
        code = _terminate(process, self.stop_timeout)
        self._reap()
        return code

    def close(self) -> None:
        """Stops the server and removes its data directory if it is a temporary one."""
        self.stop()
        if self._owns_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None

    def __enter__(self) -> "LocalServer":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def client(self, **kwargs: Any) -> Vicinity:
        """A :class:`Vicinity` of this server, with its ``api_key`` unless ``kwargs`` give one;
        other ``kwargs`` go to the client."""
        kwargs.setdefault("api_key", self.api_key)
        return Vicinity(self.url, **kwargs)

    def async_client(self, **kwargs: Any) -> AsyncVicinity:
        """An :class:`AsyncVicinity` of this server, as :meth:`client`."""
        kwargs.setdefault("api_key", self.api_key)
        return AsyncVicinity(self.url, **kwargs)


class _Exited(Exception):
    """The server process ended while we waited for it."""


# A request as a recording transport saw it: method, path, JSON body (None when it has none).
Seen = Tuple[str, str, Any]


def _record(seen: List[Seen], request: httpx.Request) -> None:
    body = json.loads(request.content) if request.content else None
    seen.append((request.method, request.url.path, body))


class RecordingTransport(httpx.BaseTransport):
    """An httpx transport that records each request, then sends it to the server for real:
    ``Vicinity(url, transport=RecordingTransport())`` shows what a piece of code asked of
    the server (``seen``, ``bodies``)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.seen: List[Seen] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        _record(self.seen, request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()

    def bodies(self, path_suffix: str) -> List[Any]:
        """The JSON bodies of the requests to paths ending in ``path_suffix``."""
        return [b for _, p, b in self.seen if p.endswith(path_suffix)]


class AsyncRecordingTransport(httpx.AsyncBaseTransport):
    """:class:`RecordingTransport` for :class:`AsyncVicinity`."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.seen: List[Seen] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        _record(self.seen, request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def bodies(self, path_suffix: str) -> List[Any]:
        """The JSON bodies of the requests to paths ending in ``path_suffix``."""
        return [b for _, p, b in self.seen if p.endswith(path_suffix)]
