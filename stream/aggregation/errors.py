"""The aggregation package's error type."""

from __future__ import annotations

from sonoflow.stream.errors import StageError


class AggregationError(StageError):
    """Inputs to frame -> lesion -> case aggregation are inconsistent (shapes, names, config)."""
