"""Training: configuration presets, optimizer and schedule, checkpoints and the ``cogvla train`` verb."""

__all__: list[str] = []
