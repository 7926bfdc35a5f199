"""Serving CogVLA to robots: the ZeroMQ actor server, its client, and the control-loop side.

Server side: ``protocol`` (wire format, docs/protocol.md), ``validation``, ``core``
(queue + dynamic batching), ``handler`` (endpoints), ``server`` (ROUTER front),
``websocket_front`` (openpi-client compatibility), ``recorder``, ``auth`` (CURVE),
``serve_cli`` / ``ping_cli`` (the ``cogvla serve`` / ``cogvla ping`` verbs).
Robot side (numpy, msgpack and pyzmq only): ``client``, ``chunker``, ``robot_loop`` and
the runnable ``example_robot``.

Nothing is imported here, so ``import deploy.client`` stays light.
"""

__all__: list[str] = []
