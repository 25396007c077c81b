"""What the control plane raises; the gateway maps these onto its OpenAI-shaped errors in one place."""

from __future__ import annotations


class ControlPlaneError(Exception):
    """Base class. ``param`` and ``code`` travel to the client unchanged (OpenAI's error fields)."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class RecordNotFoundError(ControlPlaneError):
    """The adapter, alias or job does not exist (a 404 at the API)."""


class RecordConflictError(ControlPlaneError):
    """The change contradicts the current state: a name taken, a version that exists, a finished job (409)."""


class DatabaseUnavailableError(ControlPlaneError):
    """The database cannot be reached or is locked for too long (a 503: retry later; nothing was written)."""


class MigrationError(ControlPlaneError):
    """The schema could not be brought to the version this code needs; the database was left as it was."""


class LegacyImportError(ControlPlaneError):
    """An existing state dir could not be imported; neither the files nor the database were changed."""


class LeaseLostError(ControlPlaneError):
    """A worker no longer owns the job it is running (its lease expired and another worker took it, or the job
    was cancelled): it must stop without writing anything more."""
