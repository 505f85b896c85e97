"""Errors the library raises. Messages say what is wrong, the value, and how to fix it, in one line."""

from __future__ import annotations


class InputError(ValueError):
    """A user input (image, setting, override) cannot be used."""


class OverrideError(InputError):
    """A region override names a region or style that this run does not have.

    Carries what the run has (0-based, as the API), so a caller numbering from 1 can say it in its own words.
    """

    def __init__(self, message: str, region: object, target: object, content_regions: list[int],
                 style_regions: list[list[int]]) -> None:
        super().__init__(message)
        self.region, self.target = region, target
        self.content_regions, self.style_regions = content_regions, style_regions


class ModelLoadError(ValueError):
    """A model location is missing, holds another architecture, or cannot be reached."""


class EngineUnavailable(RuntimeError):
    """An engine cannot run on this machine (e.g. torch or diffusers are not installed)."""


class Cancelled(RuntimeError):
    """The caller asked the run to stop."""
