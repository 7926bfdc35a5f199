"""Import released OpenVLA-OFT and CogVLA checkpoints (``cogvla import DIR --out OUT``).

Heavy modules load on first use, so importing this package stays cheap:
``from cogvla.convert import load_released`` pulls in torch only when called.
"""

from __future__ import annotations

from typing import Any

__all__ = ["import_released", "is_released_checkpoint", "load_released"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from cogvla.convert import load

        return getattr(load, name)
    raise AttributeError(f"module 'cogvla.convert' has no attribute {name!r}")
