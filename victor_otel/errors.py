"""The one exception family of victor_otel."""

from __future__ import annotations


class VictorOtelError(Exception):
    """Base class of every error victor_otel raises on purpose."""


class VictorOtelConfigError(VictorOtelError, ValueError):
    """A setting has a value victor_otel cannot use.

    The message names the setting (argument and environment variable) and the accepted values.
    """


class VictorOtelInitError(VictorOtelError, RuntimeError):
    """``init()`` cannot proceed as asked (already initialised differently, a foreign provider)."""
