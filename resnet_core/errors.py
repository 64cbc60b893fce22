"""Errors a user can cause and fix: each carries a one-line message naming the problem and the fix.

Entry points (the CLI, the study runner) catch :class:`ResnetCoreError`, print its message on one line and
exit with code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ResnetCoreError(Exception):
    """Base class of errors caused by user input (bad configuration, missing data, wrong checkpoint)."""


class ConfigError(ResnetCoreError, ValueError):
    """A configuration value is invalid; the message names the field and what would be valid."""


class DataError(ResnetCoreError):
    """Data could not be found or read; the message names the path tried and how to pass a local copy."""


class CheckpointError(ResnetCoreError):
    """A checkpoint is missing, unreadable or does not belong to the run being resumed."""
