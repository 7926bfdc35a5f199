"""LIBERO evaluation harness and demo generation (heavy imports happen inside the modules)."""

__all__: list[str] = []
