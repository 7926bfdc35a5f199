"""Serving CogVLA to robots: the ZeroMQ actor server, its client, and the control-loop side.

Server side: ``validation``, ``core`` (queue + dynamic batching), ``handler``
(endpoints), ``server`` (ROUTER front), ``websocket_front`` (openpi-client compatibility),
``recorder``, ``auth`` (CURVE), ``serve_cli`` / ``ping_cli`` (the ``cogvla serve`` /
``cogvla ping`` verbs). Robot side: the ``cogvla-client`` package (clients/python/,
numpy, msgpack and pyzmq only) holds the wire codec, the client, the chunker and the
control loop; ``protocol``, ``client``, ``chunker`` and ``robot_loop`` here re-export it,
and ``example_robot`` runs it.

Nothing is imported here, so ``import deploy.client`` stays light.
"""

__all__: list[str] = []
