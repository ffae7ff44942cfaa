"""Errors a user can act on. Each message is one line that names the problem and the fix."""

from __future__ import annotations


class RelinkError(Exception):
    """Base of every expected failure; the CLI prints it and exits 1."""


class NotFound(RelinkError):
    pass


class Conflict(RelinkError):
    pass


class InvalidInput(RelinkError):
    pass


class PermissionDenied(RelinkError):
    pass


class DatabaseNotMigrated(RelinkError):
    pass


class VaultError(RelinkError):
    pass
