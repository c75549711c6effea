"""Errors raised by ``sonoflow.models`` (cards, registry, runtime backends), and the product's
one exception root.

``SonoflowError`` lives here because ``sonoflow.models`` is the only package every other one may
import (``stream -> models``, ``training -> models``); ``sonoflow.stream.errors`` re-exports it,
so every error SonoFlow raises on purpose has one root whichever layer raised it.
"""

from __future__ import annotations


class SonoflowError(Exception):
    """Root of every error SonoFlow raises on purpose."""


class ModelError(SonoflowError):
    """A model card, artifact or backend is missing or does not match its contract."""


class CardError(ModelError):
    """A model card is malformed or disagrees with its artifact (name the file and the field)."""


class BackendUnavailable(ModelError):
    """The backend or precision asked for cannot run here. Never silently replaced."""


class InputContractError(ModelError):
    """An input array does not match the card's input contract (name, shape, dtype)."""
