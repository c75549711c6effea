"""ZeroMQ sockets with every limit set explicitly, and endpoint naming per execution mode.

Edges are PUSH -> PULL: the consumer binds its input, producers connect (so fan-in works and a
producer may start before its consumer: a connecting socket queues up to its HWM). Every socket
has a bounded ``LINGER`` (shutdown never hangs on a dead peer), explicit send/receive HWMs and a
``MAXMSGSIZE`` (a hostile or broken peer cannot make us allocate without bound).

tcp endpoints use CURVE: the binding side is the CURVE server and only admits client keys in the
run's allow-list, checked by a ZAP authenticator. Nothing binds 0.0.0.0 unless asked.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import zmq

from sonoflow.stream.errors import ConfigError

LINGER_MS = 200
DRAIN_LINGER_MS = 10_000  # normal end of stream: let queued packets (EOS) drain
MAX_MSG_BYTES = 256 * 1024 * 1024  # a 4K RGB frame is 25 MB; 256 MB bounds a hostile peer
CONTROL_HWM = 1000
MODES = ("threads", "processes", "tcp")
_TRANSPORT = {"threads": "inproc", "processes": "ipc", "tcp": "tcp"}


@dataclass(frozen=True)
class CurveKeys:
    """A run's CURVE material: one server key pair, one client key pair (the allow-list)."""

    server_public: bytes
    server_secret: bytes
    client_public: bytes
    client_secret: bytes

    @classmethod
    def generate(cls) -> CurveKeys:
        sp, ss = zmq.curve_keypair()
        cp, cs = zmq.curve_keypair()
        return cls(sp, ss, cp, cs)

    def as_dict(self) -> dict[str, str]:
        return {k: v.decode() for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> CurveKeys:
        return cls(**{k: v.encode() for k, v in d.items()})


class EndpointPlan:
    """Names the endpoints of one run for its execution mode.

    threads: ``inproc://sonoflow-<run>-<name>``; processes: ``ipc://<tmp>/<name>``;
    tcp: ``tcp://<host>:<free port>``.
    """

    def __init__(self, mode: str, run_id: str, host: str = "127.0.0.1"):
        if mode not in MODES:
            raise ConfigError(f"execution mode {mode!r} unknown; expected one of {MODES}")
        self.mode = mode
        self.run_id = run_id
        self.host = host
        self._dir = tempfile.mkdtemp(prefix=f"sonoflow-{run_id}-") if mode == "processes" else None
        self._ports: dict[str, int] = {}

    def endpoint(self, name: str) -> str:
        kind = _TRANSPORT[self.mode]
        if kind == "inproc":
            return f"inproc://sonoflow-{self.run_id}-{name}"
        if kind == "ipc":
            return f"ipc://{os.path.join(self._dir, name)}"
        if name not in self._ports:
            self._ports[name] = _free_port(self.host)
        return f"tcp://{self.host}:{self._ports[name]}"

    def cleanup(self) -> None:
        if self._dir and os.path.isdir(self._dir):
            for f in os.listdir(self._dir):
                try:
                    os.unlink(os.path.join(self._dir, f))
                except FileNotFoundError:
                    pass
            os.rmdir(self._dir)


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def configure(sock: zmq.Socket, *, sndhwm: int = 8, rcvhwm: int = 8) -> zmq.Socket:
    sock.setsockopt(zmq.LINGER, LINGER_MS)
    sock.setsockopt(zmq.SNDHWM, sndhwm)
    sock.setsockopt(zmq.RCVHWM, rcvhwm)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_MSG_BYTES)
    return sock


def secure_server(sock: zmq.Socket, keys: CurveKeys | None) -> None:
    if keys is not None:
        sock.curve_server = True
        sock.curve_secretkey = keys.server_secret
        sock.curve_publickey = keys.server_public
        sock.zap_domain = b"sonoflow"


def secure_client(sock: zmq.Socket, keys: CurveKeys | None) -> None:
    if keys is not None:
        sock.curve_serverkey = keys.server_public
        sock.curve_publickey = keys.client_public
        sock.curve_secretkey = keys.client_secret


def start_authenticator(ctx: zmq.Context, keys: CurveKeys | None):
    """Start a ZAP handler admitting only the run's client key. Returns it (or None)."""
    if keys is None:
        return None
    from zmq.auth.thread import ThreadAuthenticator

    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.allow("127.0.0.1")
    # allow-list of client public keys, in memory (no key files on disk)
    auth.configure_curve_callback(domain="sonoflow", credentials_provider=_AllowList(keys))
    return auth


class _AllowList:
    def __init__(self, keys: CurveKeys):
        self._allowed = {keys.client_public}

    def callback(self, domain: str, key: bytes) -> bool:
        return zmq.utils.z85.encode(key) in self._allowed or key in self._allowed


def bind(sock: zmq.Socket, endpoint: str) -> None:
    if endpoint.startswith("tcp://0.0.0.0") or endpoint.startswith("tcp://*"):
        raise ConfigError(f"refusing to bind {endpoint}: bind a specific interface "
                          "(127.0.0.1 by default); all-interfaces binding must be explicit")
    sock.bind(endpoint)


def bind_any(sock: zmq.Socket, endpoint: str, *, allow_all_interfaces: bool = False) -> None:
    if allow_all_interfaces:
        sock.bind(endpoint)
    else:
        bind(sock, endpoint)
