"""The weight-free classic engine (research/classic.md). Imports no torch, diffusers or transformers.

Besides the engine, the references `stylegallery eval` scores it against: `colour_reference` (its own per-region
colour transfer, no texture), `one_region_reference` (one region drawing from every style) and
`global_colour_reference` (one colour transfer from the pooled styles).
"""

from stylegallery.engines.classic.engine import (
    ClassicEngine,
    colour_reference,
    global_colour_reference,
    one_region_reference,
)


__all__ = ["ClassicEngine", "colour_reference", "global_colour_reference", "one_region_reference"]
