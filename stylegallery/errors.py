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

    def numbered_from_one(self, fix: str, choice: str = "Your choice") -> str:
        """This complaint in the numbers people see (R1, Style 1, region 1), ending with `fix`; `choice` names what
        was chosen ("Your choice", "The override")."""
        region, target = self.region, self.target
        if not isinstance(region, int):
            return str(self)  # not a choice numbered from 1
        if region not in self.content_regions:
            have = ", ".join(f"R{i + 1}" for i in self.content_regions)
            return f"{choice} for region R{region + 1} cannot be used: this run found regions {have}; {fix}"
        if target is None or len(target) != 2:
            return str(self)
        style, style_region = target
        if not 0 <= style < len(self.style_regions):
            return (f"{choice} R{region + 1} → Style {style + 1} cannot be used: this run has "
                    f"{len(self.style_regions)} style images; {fix}")
        have = ", ".join(str(r + 1) for r in self.style_regions[style])
        return (f"{choice} R{region + 1} → Style {style + 1} · region {style_region + 1} cannot be used: Style "
                f"{style + 1} has regions {have}; {fix}")


class ModelLoadError(ValueError):
    """A model location is missing, holds another architecture, or cannot be reached."""


class EngineUnavailable(RuntimeError):
    """An engine cannot run on this machine (e.g. torch or diffusers are not installed)."""


class Cancelled(RuntimeError):
    """The caller asked the run to stop."""
