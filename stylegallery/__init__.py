"""StyleGallery: region-aware style transfer from several reference images (CVPR 2026), with a weight-free engine.

    from stylegallery import Pipeline, Settings, preset
    pipe = Pipeline()
    result = pipe("photo.jpg", ["starry.jpg", "wave.png"], preset("paper", engine="classic"))
    result.to_pil().save("out.png")
"""

from stylegallery.config import Settings, preset
from stylegallery.errors import Cancelled, InputError, ModelLoadError
from stylegallery.pipeline import Done, Matched, Pipeline, Preview, Result, Segmented


__all__ = [
    "Cancelled", "Done", "InputError", "Matched", "ModelLoadError", "Pipeline", "Preview", "Result", "Segmented",
    "Settings", "preset",
]
__version__ = "0.1.0"
