"""Errors raised by ``sonoflow.models`` (cards, registry, runtime backends).

``sonoflow.models`` may not import ``sonoflow.stream`` (import direction: stream -> models), so
the model layer has its own small hierarchy rooted at :class:`ModelError`. Stages that load
models (``infer``) translate these into ``sonoflow.stream.errors`` types with ``raise ... from``.
"""

from __future__ import annotations


class ModelError(Exception):
    """A model card, artifact or backend is missing or does not match its contract."""


class CardError(ModelError):
    """A model card is malformed or disagrees with its artifact (name the file and the field)."""


class BackendUnavailable(ModelError):
    """The backend or precision asked for cannot run here. Never silently replaced."""


class InputContractError(ModelError):
    """An input array does not match the card's input contract (name, shape, dtype)."""
