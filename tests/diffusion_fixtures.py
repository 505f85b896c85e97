"""Shared helpers of the diffusion-engine tests: tiny models saved once per session, one engine, settings.

The tiny models are built and saved once per process (module-level cache) and loaded through the
product's own `from_pretrained` path. Test modules wrap these in their own fixtures.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from stylegallery.config import Settings, preset
from stylegallery.engines.diffusion import DiffusionEngine, TinyModelPaths, save_tiny_models


@functools.cache
def tiny_paths() -> TinyModelPaths:
    root = Path(tempfile.mkdtemp(prefix="stylegallery-tiny-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return save_tiny_models(root)


@functools.cache
def tiny_engine() -> DiffusionEngine:
    paths = tiny_paths()
    return DiffusionEngine(str(paths.sd), str(paths.dino), str(paths.depth))


def tiny_settings(preset_name: str = "paper", **diffusion: object) -> Settings:
    base = preset(preset_name)  # type: ignore[arg-type]
    return dataclasses.replace(base, diffusion=dataclasses.replace(base.diffusion, **diffusion))


def time_weights(steps: int = 15) -> np.ndarray:
    d = 1 / (1 + np.exp(5 * (np.arange(steps) / steps - 0.7)))
    return d / d.sum()


def random_image(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth random picture (two colour blobs), float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    image = np.zeros((height, width, 3), np.float32)
    for _ in range(2):
        cy, cx, colour = rng.random(), rng.random(), rng.random(3)
        weight = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) * 8)[..., None]
        image += weight * colour
    return np.clip(image + 0.05 * rng.random((height, width, 3)), 0, 1).astype(np.float32)


def one_thread():
    """Generator fixture body: torch on one thread (2 shared cores thrash with OpenMP), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
