"""The diffusion engine: the paper's method on SD 1.5 + DINOv2 + Depth-Anything-V2 (diffusers + transformers).

Modules: models (loading), inversion (stage 1 features), attention (processors), losses (stage 3 math),
latents (start latent, previews), sam (SAM base masks for stage 1), engine (the Engine), tiny (tiny random models
for tests and benchmarks).
"""

from stylegallery.engines.diffusion.engine import DiffusionEngine
from stylegallery.engines.diffusion.tiny import TinyModelPaths, save_tiny_models


__all__ = ["DiffusionEngine", "TinyModelPaths", "save_tiny_models"]
