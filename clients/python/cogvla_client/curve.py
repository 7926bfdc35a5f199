"""The client half of CurveZMQ: the keys a robot needs to talk to a CURVE-enabled server.

A robot holds the server's public key (``server.key``) and its own key pair
(``NAME.key_secret``), both ZeroMQ certificate files as ``cogvla serve --gen-keys`` or
``zmq.auth.create_certificates`` write them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Union

import zmq
import zmq.auth

__all__ = ["CurveClientKeys"]

_PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class CurveClientKeys:
    """A client's key pair and the public key of the server it trusts."""

    server_public: bytes
    public: bytes
    secret: bytes

    @classmethod
    def from_files(cls, server_key: _PathLike, client_secret: _PathLike) -> CurveClientKeys:
        """Load ``server.key`` (public) and ``<name>.key_secret``."""
        server_public, _ = zmq.auth.load_certificate(server_key)
        public, secret = zmq.auth.load_certificate(client_secret)
        if secret is None:
            raise ValueError(f"curve keys: {client_secret} holds no secret key (pass the .key_secret file)")
        return cls(server_public=server_public, public=public, secret=secret)

    def apply(self, socket: zmq.Socket) -> None:
        """Make ``socket`` a CURVE client (before connect)."""
        socket.curve_serverkey = self.server_public
        socket.curve_publickey = self.public
        socket.curve_secretkey = self.secret
