"""Robot-side client of a cogvla policy server; needs numpy, msgpack and pyzmq only.

    from cogvla_client import ActionChunker, PolicyClient

    policy = PolicyClient("tcp://10.0.0.7:5555", timeout_ms=1000)
    policy.wait_ready(timeout_s=300)
    chunk = policy.infer(obs)          # (chunk, 7) float32, robot units

Modules: ``protocol`` (the wire codec), ``client`` (``PolicyClient``), ``chunker``
(``ActionChunker``), ``robot_loop`` (``ControlLoop``), ``policy_api`` (the observation
schema and ``Policy`` interface), ``curve`` (CurveZMQ client keys), and with the
``websocket`` extra ``websocket_client`` (``WebSocketPolicyClient``, for
``cogvla serve --websocket-port``).
"""

from cogvla_client.chunker import ActionChunker, ChunkerConfig
from cogvla_client.client import (
    BadRequest,
    ClientError,
    NotReady,
    PolicyClient,
    ServerError,
    ServerTimeout,
)
from cogvla_client.curve import CurveClientKeys
from cogvla_client.policy_api import Policy
from cogvla_client.robot_loop import ControlLoop, LoopConfig

__all__ = [
    "ActionChunker",
    "BadRequest",
    "ChunkerConfig",
    "ClientError",
    "ControlLoop",
    "CurveClientKeys",
    "LoopConfig",
    "NotReady",
    "Policy",
    "PolicyClient",
    "ServerError",
    "ServerTimeout",
]
