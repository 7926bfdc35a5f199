"""CurveZMQ keys: generation, loading, and the server-side allow-list.

``generate_keys(DIR)`` (``cogvla serve --gen-keys DIR``) writes::

    DIR/server.key                    server public key   -> copy to every robot
    DIR/server.key_secret             server secret key   -> stays on the server
    DIR/authorized_clients/<name>.key client public keys  -> the server's allow-list
    DIR/<name>.key_secret             client secret key   -> copy to that robot only

A server started with ``--curve-dir DIR`` encrypts every connection and answers only
clients whose public key is in ``DIR/authorized_clients``; the ZAP handshake of any other
client fails, so it never gets a single byte back.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from cogvla_client.curve import CurveClientKeys
from zmq.auth.thread import ThreadAuthenticator

__all__ = [
    "ALLOW_DIR",
    "CurveClientKeys",
    "CurveServerKeys",
    "generate_keys",
    "load_allow_list",
    "start_authenticator",
]

ALLOW_DIR = "authorized_clients"
_SERVER = "server"


@dataclass(frozen=True)
class CurveServerKeys:
    """The server's key pair and the folder of client public keys it accepts."""

    public: bytes
    secret: bytes
    allow_dir: Path

    @classmethod
    def from_dir(cls, directory: str | os.PathLike[str]) -> CurveServerKeys:
        """Load ``DIR/server.key_secret`` and use ``DIR/authorized_clients`` as the allow-list."""
        folder = Path(directory)
        secret_file = folder / f"{_SERVER}.key_secret"
        if not secret_file.is_file():
            raise FileNotFoundError(
                f"curve keys: expected {secret_file} (create it with `cogvla serve --gen-keys {folder}`)"
            )
        public, secret = zmq.auth.load_certificate(secret_file)
        if secret is None:
            raise ValueError(f"curve keys: {secret_file} holds no secret key")
        allow = folder / ALLOW_DIR
        if not allow.is_dir():
            raise FileNotFoundError(f"curve keys: expected the allow-list folder {allow}")
        return cls(public=public, secret=secret, allow_dir=allow)

    def apply(self, socket: zmq.Socket) -> None:
        """Make ``socket`` a CURVE server (before bind)."""
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public
        socket.curve_server = True


def generate_keys(
    directory: str | os.PathLike[str], clients: tuple[str, ...] = ("client",)
) -> dict[str, str]:
    """Write a server key pair and one key pair per client name; returns the file paths."""
    folder = Path(directory)
    allow = folder / ALLOW_DIR
    allow.mkdir(parents=True, exist_ok=True)
    server_public, server_secret = zmq.auth.create_certificates(folder, _SERVER)
    paths = {"server_public": server_public, "server_secret": server_secret, "allow_dir": str(allow)}
    for name in clients:
        public, secret = zmq.auth.create_certificates(folder, name)
        listed = allow / Path(public).name
        shutil.move(public, listed)
        paths[f"{name}_public"] = str(listed)
        paths[f"{name}_secret"] = secret
        os.chmod(secret, 0o600)
    os.chmod(server_secret, 0o600)
    return paths


def start_authenticator(context: zmq.Context, keys: CurveServerKeys) -> ThreadAuthenticator:
    """Run the ZAP handler that accepts only the allow-listed client keys (stop() it on exit)."""
    auth = ThreadAuthenticator(context)
    auth.start()
    load_allow_list(auth, keys)
    return auth


def load_allow_list(auth: ThreadAuthenticator, keys: CurveServerKeys) -> int:
    """(Re)read the allow-list folder into ``auth``; returns how many client keys it holds.

    Takes effect for the next handshake; connected clients keep their session.
    """
    auth.configure_curve(domain="*", location=str(keys.allow_dir))
    return len(auth.certs.get("*", {}))
