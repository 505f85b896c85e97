"""SAM base masks (the official SAM path of stage 1, paper 2.2 code): our SamAutomaticMaskGenerator on transformers'
SamModel without torchvision, its official defaults, and stage 1 of the diffusion engine starting from its map."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest


torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from stylegallery import regions  # noqa: E402
from stylegallery.config import DiffusionSettings, RegionSettings, preset  # noqa: E402
from stylegallery.engines.diffusion import sam  # noqa: E402
from tests.fixtures import random_image, tiny_paths  # noqa: E402


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory: pytest.TempPathFactory) -> str:
    from stylegallery.engines.diffusion.tiny import save_tiny_sam

    return str(save_tiny_sam(tmp_path_factory.mktemp("tiny-sam")))


# ---- the generator's pieces, on exact toys (segment_anything's amg.py values) -------------------------------


def test_point_grid_is_the_cell_centres_x_first():
    np.testing.assert_allclose(sam.point_grid(2), [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])
    assert sam.point_grid(16).shape == (256, 2)


def test_crop_boxes_are_segment_anythings():
    boxes, layers = sam.crop_boxes(1000, 1000, 1)
    # overlap int(512/1500 * 1000) = 341, crop side ceil((341 + 1000) / 2) = 671, x0/y0 in (0, 330), x before y
    assert boxes == [[0, 0, 1000, 1000], [0, 0, 671, 671], [0, 330, 671, 1000], [330, 0, 1000, 671],
                     [330, 330, 1000, 1000]]
    assert layers == [0, 1, 1, 1, 1]
    assert sam.crop_boxes(48, 72, 0) == ([[0, 0, 72, 48]], [0])


def test_stability_boxes_and_nms():
    logits = torch.tensor([[[3.0, 3.0], [0.5, -3.0]], [[-3.0, -3.0], [-3.0, -3.0]]])  # (2, 2, 2)
    np.testing.assert_allclose(sam.stability_scores(logits, 0.0, 1.0), [2 / 3, 0.0])
    masks = torch.zeros(2, 5, 6, dtype=torch.bool)
    masks[0, 1:3, 2:5] = True
    assert sam.masks_to_boxes(masks).tolist() == [[2, 1, 4, 2], [0, 0, 0, 0]]  # max corners inclusive; empty -> 0
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 5], [20, 20, 30, 30]], dtype=torch.float)
    scores = torch.tensor([0.5, 0.9, 0.8, 0.1])
    # box 1 wins; box 0 overlaps it by 81/100 > 0.7 and goes; box 2 overlaps box 1 by 36/(81+50-36) = 0.38 and stays
    assert sam.box_nms(boxes, scores, 0.7).tolist() == [1, 2, 3]
    assert sam.box_nms(boxes, scores, 0.3).tolist() == [1, 3]
    edge = sam.near_crop_edge(torch.tensor([[0.0, 0, 40, 40], [0, 0, 90, 40]]), [0, 0, 100, 100], [0, 0, 200, 100])
    assert edge.tolist() == [False, True]  # the second ends at the crop's right edge, inside the image


def test_the_official_generator_defaults_are_pinned():
    defaults = {name: p.default for name, p in inspect.signature(sam.sam_masks).parameters.items()
                if p.default is not inspect.Parameter.empty}
    assert defaults == {"points_per_side": 16, "pred_iou_thresh": 0.98, "stability_score_thresh": 0.95,
                        "crop_n_layers": 1, "crop_n_points_downscale_factor": 2, "points_per_batch": 64,
                        "box_nms_thresh": 0.7, "crop_nms_thresh": 0.7, "crop_overlap_ratio": 512 / 1500,
                        "stability_score_offset": 1.0, "mask_threshold": 0.0}
    d = DiffusionSettings()
    assert (d.sam_model, d.sam_pred_iou_thresh, d.sam_stability_thresh) == (None, 0.98, 0.95)
    assert RegionSettings().sam_merge_threshold == 0.5


# ---- the tiny random SAM ----------------------------------------------------------------------------------


def test_a_tiny_random_sam_generates_masks_without_torchvision(tiny_sam):
    from stylegallery.engines.diffusion.models import load_sam

    model_and_processor = load_sam(tiny_sam)
    image = random_image(48, 72, 0)
    # a random SAM scores every mask near 0 and has stability 0: the official thresholds keep none
    assert sam.sam_masks(model_and_processor, image) == []
    with pytest.raises(ValueError, match="no SAM masks: the mask generator found no region above its thresholds"):
        regions.sam_label_map([], (6, 9))
    masks = sam.sam_masks(model_and_processor, image, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    assert masks and all(m.shape == (48, 72) and m.dtype == bool and m.any() for m in masks)
    with pytest.raises(ValueError, match="pred_iou_thresh=1.5"):
        sam.sam_masks(model_and_processor, image, pred_iou_thresh=1.5)


def test_sam_masks_replace_k_means_in_the_diffusion_engines_stage_1(tiny_sam):
    from stylegallery.pipeline import Pipeline

    paths = tiny_paths()
    settings = preset("paper", engine="diffusion")
    settings = dataclasses.replace(
        settings,
        image=dataclasses.replace(settings.image, size=96),
        # no merge of the base regions: the map is SAM's own (k-means merges this random model's clusters into one)
        regions=dataclasses.replace(settings.regions, min_region_cells=1, sam_merge_threshold=0.0),
        diffusion=dataclasses.replace(settings.diffusion, sd_model=str(paths.sd), dino_model=str(paths.dino),
                                      depth_model=None, steps=1, sam_model=tiny_sam, sam_pred_iou_thresh=0.0,
                                      sam_stability_thresh=0.0),
    )
    pipe = Pipeline()
    content, style = random_image(64, 96, 1), random_image(64, 64, 2)
    result = pipe(content, [style], settings)
    engine = pipe.engine("diffusion", settings)
    assert engine.stats["sam_calls"] == 2  # the content and the style
    analysis = engine.analyze(result.content_image, settings, regions.logistic_time_weights(15))
    assert analysis.masks is not None and analysis.masks.shape[1:] == (64, 96) and len(analysis.masks) >= 1
    base = regions.sam_label_map(list(analysis.masks), analysis.grid_shape)
    expected = regions.segment_from_base(base, analysis.merge_features, settings.regions)
    np.testing.assert_array_equal(result.content_labels, expected)
    assert len(np.unique(result.content_labels)) == len(np.unique(base)) >= 2
    assert np.isfinite(result.image).all() and result.image.shape == (64, 96, 3)
    # the official thresholds keep no mask of a random SAM: one clear error, not k-means in its place
    strict = dataclasses.replace(settings, diffusion=dataclasses.replace(settings.diffusion, sam_pred_iou_thresh=0.98,
                                                                         sam_stability_thresh=0.95))
    with pytest.raises(ValueError, match="no SAM masks"):
        pipe(content, [style], strict)
