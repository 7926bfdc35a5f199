"""``PolicyClient``, the robot-side ZeroMQ client.

The code lives in the robot-side package ``cogvla-client`` (``cogvla_client.client``, in
clients/python/), which installs without torch; this module keeps its import path.
"""

from cogvla_client.client import *  # noqa: F403
from cogvla_client.client import __all__  # noqa: F401
