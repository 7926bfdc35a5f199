"""Demonstration data: LIBERO-schema HDF5 I/O, training windows, statistics and augmentation."""

__all__: list[str] = []
