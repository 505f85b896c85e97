"""Errors the library raises. Messages say what is wrong, the value, and how to fix it, in one line."""

from __future__ import annotations


class InputError(ValueError):
    """A user input (image, setting, override) cannot be used."""


class ModelLoadError(ValueError):
    """A model location is missing, holds another architecture, or cannot be reached."""


class EngineUnavailable(RuntimeError):
    """An engine cannot run on this machine (e.g. torch or diffusers are not installed)."""


class Cancelled(RuntimeError):
    """The caller asked the run to stop."""
