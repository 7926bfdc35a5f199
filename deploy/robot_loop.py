"""The fixed-rate robot control loop.

The code lives in the robot-side package ``cogvla-client`` (``cogvla_client.robot_loop``, in
clients/python/), which installs without torch; this module keeps its import path.
"""

from cogvla_client.robot_loop import *  # noqa: F403
from cogvla_client.robot_loop import __all__  # noqa: F401
