"""User label masks (--content-mask, the official label.png) and SAM base maps replacing stage 1 (paper 2.2 code)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from stylegallery import images, regions
from stylegallery.config import RegionSettings
from stylegallery.errors import InputError
from tests.test_pipeline import SMALL, _two_region_image, fake_pipe  # noqa: F401 (fixture)


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array, mode) if mode is None else Image.fromarray(array).convert(mode)
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _three_regions(h: int = 48, w: int = 72) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    mask[:, w // 3:] = 7
    mask[h // 2:, 2 * w // 3:] = 200
    return mask


def test_grey_palette_and_colour_masks_give_one_label_per_value():
    grey = _three_regions()
    expected = np.unique(grey, return_inverse=True)[1].reshape(grey.shape)
    np.testing.assert_array_equal(images.load_label_mask(_png(grey)), expected)
    palette = Image.fromarray(grey).convert("P")
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG")
    assert len(np.unique(images.load_label_mask(buffer.getvalue()))) == 3
    colours = np.stack([grey, 255 - grey, grey // 2], axis=-1)
    assert len(np.unique(images.load_label_mask(_png(colours)))) == 3
    np.testing.assert_array_equal(images.load_label_mask(grey.astype(np.int64)), expected)


def test_unusable_masks_are_refused_with_one_clear_line():
    noisy = np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8)  # a photo or a JPEG, not labels
    with pytest.raises(InputError, match="distinct values.*PNG"):
        images.load_label_mask(_png(noisy))
    with pytest.raises(InputError, match="not an image"):
        images.load_label_mask(b"not a png at all")
    with pytest.raises(InputError, match="non-integer"):
        images.load_label_mask(np.full((8, 8), 0.5))
    with pytest.raises(InputError, match="aspect"):
        regions.labels_from_mask(np.zeros((40, 40), np.int32), (6, 9), image_shape=(48, 72))


def test_mask_is_nearest_resized_to_the_grid_and_relabelled():
    mask = images.load_label_mask(_png(_three_regions(48, 72)))
    grid = regions.labels_from_mask(mask, (6, 9), image_shape=(48, 72))
    assert grid.shape == (6, 9) and set(np.unique(grid)) == {0, 1, 2}
    assert (grid[:, :3] == 0).all() and (grid[:3, 3:] == 1).all() and (grid[3:, 6:] == 2).all()


def test_official_overlay_keeps_clusters_where_the_mask_is_zero():
    clusters = np.repeat(np.arange(4), 3)[None, :].repeat(4, axis=0)  # (4, 12), four bands
    mask = np.zeros_like(clusters)
    mask[:2, :6] = 5
    out = regions.overlay_label_mask(clusters, mask)
    assert len(np.unique(out)) == 5 and len(np.unique(out[:2, :6])) == 1
    assert out[3, 0] != out[0, 0]


def test_the_pipeline_uses_the_user_regions_for_the_content(fake_pipe):  # noqa: F811
    pipe, _ = fake_pipe
    content = _two_region_image(64, 96)  # two colour halves: stage 1 alone finds 2 regions
    mask = np.zeros((64, 96), np.uint8)
    mask[:32] = 1
    mask[32:, 48:] = 2  # three user regions that cut across the colours
    result = pipe(content, [_two_region_image(64, 96, left=(0.1, 1, 0.1))], SMALL, content_mask=_png(mask))
    assert len(np.unique(result.content_labels)) == 3
    assert {m.content_region for m in result.matches} == {0, 1, 2}
    plain = pipe(content, [_two_region_image(64, 96, left=(0.1, 1, 0.1))], SMALL)
    assert len(np.unique(plain.content_labels)) == 2  # the cache did not keep the masked regions
    with pytest.raises(InputError, match="aspect"):
        pipe(content, [content], SMALL, content_mask=_png(np.zeros((50, 50), np.uint8)))


# ---- SAM -------------------------------------------------------------------------------------------------


def test_sam_base_map_paints_the_largest_first_and_merges_like_the_official_path():
    big = np.zeros((32, 32), bool)
    big[:, :24] = True
    small = np.zeros((32, 32), bool)
    small[8:16, 8:16] = True
    base = regions.sam_label_map([small, big], (8, 8))
    assert base[0, 0] == 1 and base[3, 3] == 2 and base[0, 7] == 0  # small stays on top of big; 0 is uncovered
    f = np.zeros((8, 8, 4))
    f[..., 0] = np.where(base == 0, 3.0, 0.0)  # big and small look alike (merged at 0.5); the rest does not
    labels = regions.segment_from_base(base, f, RegionSettings(min_region_cells=1))
    assert len(np.unique(labels)) == 2
    with pytest.raises(ValueError, match="no SAM masks"):
        regions.sam_label_map([], (8, 8))
