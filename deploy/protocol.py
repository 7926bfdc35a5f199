"""The wire codec of docs/protocol.md.

The code lives in the robot-side package ``cogvla-client`` (``cogvla_client.protocol``, in
clients/python/), which installs without torch; this module keeps its import path.
"""

from cogvla_client.protocol import *  # noqa: F403
from cogvla_client.protocol import __all__  # noqa: F401
