"""Exceptions that carry a message meant for the user: what is wrong, where, and how to fix it."""

from __future__ import annotations


class FlairError(Exception):
    """Base class of every error flairkit reports to users (the CLI exits non-zero with its message)."""

    exit_code = 2


class ConfigError(FlairError):
    """A configuration key is unknown, mistyped, missing or inconsistent with another key."""


class DataError(FlairError):
    """An input file is missing, unreadable or does not have the expected content."""


class CheckpointError(FlairError):
    """A weights file cannot be loaded into the configured model."""


class OutputExistsError(FlairError):
    """An output already exists and overwriting it was not asked for."""
