"""Starts the real `clew` binary for end-to-end tests."""
import contextlib
import importlib
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import requests

CLEW_BIN = os.environ.get("CLEW_BIN", "clew")


def free_ports(tcp, udp):
    sockets = []
    try:
        for kind in [socket.SOCK_STREAM] * tcp + [socket.SOCK_DGRAM] * udp:
            s = socket.socket(socket.AF_INET, kind)
            sockets.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Clew:
    """One clew process on free ports with its own data directory; restartable."""

    def __init__(self, data_dir, idle_seconds=0.5, extra_env=None):
        self.data_dir = data_dir
        self.pick_ports()
        self.idle_seconds = idle_seconds
        self.extra_env = extra_env or {}
        self.process = None
        self.log_path = os.path.join(data_dir, "clew.log")

    def pick_ports(self):
        """Nine distinct free ports: all are held open together while they are chosen."""
        (self.grpc_port, self.http_port, self.query_port, self.zipkin_port, self.tempo_port, thrift_http, jaeger_grpc,
         agent_compact, agent_binary) = free_ports(7, 2)
        self.jaeger_ports = {"thrift_http": thrift_http, "grpc": jaeger_grpc, "agent_compact": agent_compact, "agent_binary": agent_binary}

    @property
    def query(self):
        return f"http://127.0.0.1:{self.query_port}"

    @property
    def otlp_http(self):
        return f"http://127.0.0.1:{self.http_port}/v1/traces"

    @property
    def zipkin(self):
        return f"http://127.0.0.1:{self.zipkin_port}"

    @property
    def tempo(self):
        return f"http://127.0.0.1:{self.tempo_port}"

    @property
    def otlp_grpc(self):
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout=60, attempts=3):
        env = dict(os.environ, CLEW_LOG="info", **self.extra_env)
        for name, port in self.jaeger_ports.items():
            env[f"CLEW_SERVER__JAEGER_{name.upper()}_ADDRESS"] = f"127.0.0.1:{port}"
        env["CLEW_SERVER__TEMPO_ADDRESS"] = f"127.0.0.1:{self.tempo_port}"
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [CLEW_BIN, "serve", "--data-dir", os.path.join(self.data_dir, "data"),
             "--otlp-grpc", self.otlp_grpc, "--otlp-http", f"127.0.0.1:{self.http_port}",
             "--query", f"127.0.0.1:{self.query_port}", "--zipkin", f"127.0.0.1:{self.zipkin_port}",
             "--trace-idle-seconds", str(self.idle_seconds)],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                log = self.read_log()
                if "Address already in use" in log[-2000:] and attempts > 0:
                    # Another process took a port between its choice and the bind: choose again.
                    self.log.close()
                    self.pick_ports()
                    return self.start(timeout, attempts - 1)
                raise RuntimeError(f"clew exited with {self.process.returncode}: {log[-3000:]}")
            try:
                if requests.get(self.query + "/api/v1/status", timeout=1).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError("clew did not start: " + self.read_log()[-3000:])

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self):
        return self.process.poll() is None

    def get(self, path, **params):
        return requests.get(self.query + path, params=params, timeout=30)


@pytest.fixture
def clew():
    with tempfile.TemporaryDirectory(prefix="clew-test-") as directory:
        server = Clew(directory).start()
        yield server
        server.stop()


@pytest.fixture
def clew_factory():
    made = []
    with tempfile.TemporaryDirectory(prefix="clew-test-") as directory:
        def make(**kwargs):
            server = Clew(directory, **kwargs)
            made.append(server)
            return server
        yield make
        for server in made:
            server.stop()


def wait_for_trace(server, trace_id, spans, timeout=20):
    """Polls until the trace has `spans` spans; returns it."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        response = server.get(f"/api/v1/traces/{trace_id}")
        if response.status_code == 200:
            last = response.json()
            if last["spanCount"] >= spans:
                return last
        time.sleep(0.1)
    raise AssertionError(f"trace {trace_id} did not reach {spans} spans: {last}")


class DemoUrl(str):
    """The demo's query API address; `.tempo` is its Tempo API's."""
    tempo: str


@contextlib.contextmanager
def running_demo(*extra, ready, timeout=120):
    """`clew demo` on free ports with its own data directory, until `ready(base)` holds (it
    may raise requests errors while the server starts); stopped afterwards."""
    with tempfile.TemporaryDirectory(prefix="clew-demo-") as directory:
        grpc, http, query, zipkin, tempo, thrift, jaeger_grpc, compact, binary = free_ports(7, 2)
        env = dict(os.environ, CLEW_SERVER__TEMPO_ADDRESS=f"127.0.0.1:{tempo}",
                   CLEW_SERVER__JAEGER_THRIFT_HTTP_ADDRESS=f"127.0.0.1:{thrift}",
                   CLEW_SERVER__JAEGER_GRPC_ADDRESS=f"127.0.0.1:{jaeger_grpc}",
                   CLEW_SERVER__JAEGER_AGENT_COMPACT_ADDRESS=f"127.0.0.1:{compact}",
                   CLEW_SERVER__JAEGER_AGENT_BINARY_ADDRESS=f"127.0.0.1:{binary}")
        log_path = os.path.join(directory, "demo.log")
        process = subprocess.Popen(
            [CLEW_BIN, "demo", "--data-dir", os.path.join(directory, "data"), "--otlp-grpc", f"127.0.0.1:{grpc}",
             "--otlp-http", f"127.0.0.1:{http}", "--query", f"127.0.0.1:{query}", "--zipkin", f"127.0.0.1:{zipkin}",
             "--trace-idle-seconds", "1", *extra],
            stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, env=env)
        base = DemoUrl(f"http://127.0.0.1:{query}")
        base.tempo = f"http://127.0.0.1:{tempo}"
        try:
            deadline = time.time() + timeout
            while time.time() < deadline:
                assert process.poll() is None, open(log_path).read()[-3000:]
                try:
                    if ready(base):
                        break
                except requests.RequestException:
                    pass
                time.sleep(0.5)
            yield base
        finally:
            process.terminate()
            process.wait(timeout=30)


def compile_protos(out, *names):
    """Compiles `protos/<name>.proto` with grpcio-tools into `out` and imports each one's message
    and service modules: [(name_pb2, name_pb2_grpc), ...]."""
    import grpc_tools
    protos = str(pathlib.Path(__file__).parent / "protos")
    include = str(pathlib.Path(grpc_tools.__file__).parent / "_proto")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{protos}", f"-I{include}", f"--python_out={out}",
                    f"--grpc_python_out={out}", *(f"{name}.proto" for name in names)], check=True)
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    return [(importlib.import_module(f"{name}_pb2"), importlib.import_module(f"{name}_pb2_grpc")) for name in names]
