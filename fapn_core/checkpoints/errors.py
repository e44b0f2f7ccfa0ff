"""What every checkpoint module raises, and the size limit of a checkpoint file."""

from __future__ import annotations

DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB: refuse larger checkpoint files unless the caller raises the limit


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not match the model."""
