"""Latency profiling of the model, the policy server and the simulator (``cogvla profile``).

Heavy libraries (torch, zmq, libero) are imported by the sub-modules that need them,
never here.
"""

__all__: list[str] = []
