"""StyleGallery: region-aware style transfer from several reference images (CVPR 2026), with a weight-free engine.

    from stylegallery import Pipeline, Settings, preset
    pipe = Pipeline()
    result = pipe("photo.jpg", ["starry.jpg", "wave.png"], preset("paper", engine="classic"))
    result.to_pil().save("out.png")
"""

from __future__ import annotations

import importlib
from typing import Any


__version__ = "0.1.0"

# Exported names and the module that holds each; imported on first use so `import stylegallery.images`
# (or the CLI's argument parsing) stays light.
_EXPORTS = {
    "Settings": "stylegallery.config",
    "preset": "stylegallery.config",
    "Cancelled": "stylegallery.errors",
    "InputError": "stylegallery.errors",
    "ModelLoadError": "stylegallery.errors",
    "Pipeline": "stylegallery.pipeline",
    "Result": "stylegallery.pipeline",
    "Segmented": "stylegallery.pipeline",
    "ContentSegmented": "stylegallery.pipeline",
    "Matched": "stylegallery.pipeline",
    "Preview": "stylegallery.pipeline",
    "Done": "stylegallery.pipeline",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'stylegallery' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
