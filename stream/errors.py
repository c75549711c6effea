"""One exception root for the whole product (``SonoflowError``, defined in
``sonoflow.models.errors`` so that every layer can reach it; re-exported here).

Every error names the expected value, the actual value and the fix where one exists, and the
file it concerns where there is one.
"""

from __future__ import annotations

from sonoflow.models.errors import BackendUnavailable, ModelError, SonoflowError

__all__ = ["SonoflowError", "ConfigError", "WireError", "SourceError", "StageError",
           "ModelError", "BackendUnavailable"]


class ConfigError(SonoflowError):
    """A pipeline file, CLI option or stage config is wrong."""


class WireError(SonoflowError):
    """A message on the wire is malformed or has an unknown schema version."""


class SourceError(SonoflowError):
    """A capture source cannot be opened or read (missing, corrupt, unsupported)."""

    def __init__(self, path: str, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class StageError(SonoflowError):
    """A stage failed in a way the runner reports (open failure, too many errors)."""

