"""The policy interface and observation schema every harness speaks.

The code lives in the robot-side package ``cogvla-client`` (``cogvla_client.policy_api``, in
clients/python/), which installs without torch; this module keeps its import path.
"""

from cogvla_client.policy_api import *  # noqa: F403
from cogvla_client.policy_api import __all__  # noqa: F401
