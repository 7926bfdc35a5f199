"""``ActionChunker``: executing action chunks open-loop, ensembled or asynchronously.

The code lives in the robot-side package ``cogvla-client`` (``cogvla_client.chunker``, in
clients/python/), which installs without torch; this module keeps its import path.
"""

from cogvla_client.chunker import *  # noqa: F403
from cogvla_client.chunker import __all__  # noqa: F401
