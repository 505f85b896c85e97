"""The weight-free classic engine (research/classic.md). Imports no torch, diffusers or transformers."""

from stylegallery.engines.classic.engine import ClassicEngine


__all__ = ["ClassicEngine"]
