"""SAM base masks for stage 1 (the official SAM path, paper 2.2 code): automatic mask generation on transformers'
SamModel, without torchvision.

The official code runs segment_anything's `SamAutomaticMaskGenerator` (points_per_side 16, pred_iou_thresh 0.98,
stability_score_thresh 0.95, crop_n_layers 1, crop_n_points_downscale_factor 2, min_mask_region_area 1000). That
generator, reproduced here step by step:

1. Crops: the whole image, then for each crop layer i >= 1 a (2^i x 2^i) grid of overlapping crops
   (`crop_boxes`; overlap 512/1500 of the short side in layer 1).
2. Per crop: the crop's image embedding once; a regular grid of points_per_side / downscale^i points per side
   (`point_grid`), each one positive point prompt, in batches of points_per_batch; three masks per point
   (multimask output) upscaled to the crop as logits.
3. Per mask: kept if its predicted IoU > pred_iou_thresh and its stability score (IoU of the masks thresholded at
   mask_threshold +- 1, `stability_scores`) >= stability_score_thresh; binarised at 0; dropped if its box touches
   a crop edge that is not an image edge; box NMS (IoU 0.7) by predicted IoU within the crop.
4. Across crops: box NMS (IoU 0.7) preferring masks from smaller crops.

Deviation: min_mask_region_area (removing islands and holes under 1000 px from each mask) is not applied; stage 1's
small-region absorption follows anyway. transformers' own mask-generation pipeline needs torchvision (its NMS and
its default image processor) and skips the per-crop NMS; this module needs neither: SamImageProcessorPil
preprocesses, NMS is `box_nms` below.

Notation: boxes are (N, 4) xyxy in pixels with inclusive max corners, as segment_anything's `batched_mask_to_box`.
"""

from __future__ import annotations

import math
from itertools import product
from typing import Any

import numpy as np
import torch


def point_grid(n_per_side: int) -> np.ndarray:
    """(n^2, 2) xy points in [0, 1], cell centres of an n x n grid (segment_anything `build_point_grid`)."""
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def crop_boxes(height: int, width: int, n_layers: int, overlap_ratio: float = 512 / 1500
               ) -> tuple[list[list[int]], list[int]]:
    """(xyxy crop boxes, their layer): the whole image (layer 0), then (2^(i+1))^2 overlapping crops per layer i + 1
    (segment_anything `generate_crop_boxes`)."""
    boxes, layers = [[0, 0, width, height]], [0]
    for layer in range(n_layers):
        n = 2 ** (layer + 1)
        overlap = int(overlap_ratio * min(height, width) * (2 / n))
        crop_w = int(math.ceil((overlap * (n - 1) + width) / n))
        crop_h = int(math.ceil((overlap * (n - 1) + height) / n))
        for x0, y0 in product([int((crop_w - overlap) * i) for i in range(n)],
                              [int((crop_h - overlap) * i) for i in range(n)]):
            boxes.append([x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height)])
            layers.append(layer + 1)
    return boxes, layers


def stability_scores(logits: torch.Tensor, mask_threshold: float, offset: float) -> torch.Tensor:
    """(N,) IoU of each (N, H, W) logit mask thresholded at mask_threshold + offset and - offset (SAM's
    `calculate_stability_score`)."""
    inner = (logits > mask_threshold + offset).flatten(1).sum(-1)
    outer = (logits > mask_threshold - offset).flatten(1).sum(-1)
    return inner / outer.clamp(min=1)


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, 4) xyxy boxes of (N, H, W) boolean masks, max corners inclusive; [0, 0, 0, 0] for an empty mask."""
    if masks.shape[0] == 0:
        return torch.zeros(0, 4)
    height, width = masks.shape[-2:]
    rows, cols = masks.any(-1), masks.any(-2)  # (N, H), (N, W)
    ys, xs = torch.arange(height), torch.arange(width)
    boxes = torch.stack([torch.where(cols, xs, width).min(-1).values, torch.where(rows, ys, height).min(-1).values,
                         torch.where(cols, xs, -1).max(-1).values, torch.where(rows, ys, -1).max(-1).values], -1)
    empty = ~rows.any(-1)
    boxes[empty] = 0
    return boxes.float()


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the boxes kept by greedy NMS, best score first (torchvision.ops.nms): a box is dropped when its
    IoU with a kept higher-scoring box exceeds `iou_threshold`. boxes (N, 4) xyxy, scores (N,)."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long)
    boxes = boxes.double()
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # (N,)
    low = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])  # (N, N, 2)
    high = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (high - low).clamp(min=0).prod(-1)  # (N, N)
    union = area[:, None] + area[None, :] - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))
    suppressed = torch.zeros(boxes.shape[0], dtype=torch.bool)
    keep = []
    for i in torch.argsort(scores, descending=True, stable=True).tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return torch.tensor(keep, dtype=torch.long)


def near_crop_edge(boxes: torch.Tensor, crop: list[int], image: list[int], atol: float = 20.0) -> torch.Tensor:
    """(N,) True for boxes (image coordinates) within atol px of a crop edge that is not also an image edge."""
    crop_t, image_t = torch.tensor(crop, dtype=torch.float), torch.tensor(image, dtype=torch.float)
    at_crop = torch.isclose(boxes, crop_t[None], atol=atol, rtol=0)
    at_image = torch.isclose(boxes, image_t[None], atol=atol, rtol=0)
    return (at_crop & ~at_image).any(-1)


def sam_masks(sam: tuple[Any, Any], image: np.ndarray, *, points_per_side: int = 16, pred_iou_thresh: float = 0.98,
              stability_score_thresh: float = 0.95, crop_n_layers: int = 1, crop_n_points_downscale_factor: int = 2,
              points_per_batch: int = 64, box_nms_thresh: float = 0.7, crop_nms_thresh: float = 0.7,
              crop_overlap_ratio: float = 512 / 1500, stability_score_offset: float = 1.0,
              mask_threshold: float = 0.0) -> list[np.ndarray]:
    """Boolean (H, W) masks of an (H, W, 3) float [0, 1] image; sam: `models.load_sam`'s (SamModel, processor).

    The defaults are the official SamAutomaticMaskGenerator's (module docstring). May return no mask: a random or
    unsuited model scores none above the thresholds. Feed the result to regions.sam_label_map, then
    regions.segment_from_base.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
        raise ValueError(f"image must be an (H, W, 3) float array in [0, 1], got shape {image.shape}")
    if not isinstance(points_per_side, int) or points_per_side < 1:
        raise ValueError(f"points_per_side={points_per_side!r} is invalid: expected an integer >= 1")
    if not isinstance(points_per_batch, int) or points_per_batch < 1:
        raise ValueError(f"points_per_batch={points_per_batch!r} is invalid: expected an integer >= 1")
    if not isinstance(crop_n_layers, int) or crop_n_layers < 0:
        raise ValueError(f"crop_n_layers={crop_n_layers!r} is invalid: expected an integer >= 0")
    if not isinstance(crop_n_points_downscale_factor, int) or crop_n_points_downscale_factor < 1:
        raise ValueError(f"crop_n_points_downscale_factor={crop_n_points_downscale_factor!r} is invalid: expected an "
                         "integer >= 1")
    for name, value in (("pred_iou_thresh", pred_iou_thresh), ("stability_score_thresh", stability_score_thresh),
                        ("box_nms_thresh", box_nms_thresh), ("crop_nms_thresh", crop_nms_thresh),
                        ("crop_overlap_ratio", crop_overlap_ratio)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name}={value!r} is invalid: expected 0..1")
    pixels = (image * 255).round().clip(0, 255).astype(np.uint8)
    return _generate_masks(*sam, pixels, points_per_side, pred_iou_thresh, stability_score_thresh, crop_n_layers,
                           crop_n_points_downscale_factor, points_per_batch, box_nms_thresh, crop_nms_thresh,
                           crop_overlap_ratio, stability_score_offset, mask_threshold)


@torch.no_grad()
def _generate_masks(model: Any, processor: Any, image: np.ndarray, points_per_side: int, pred_iou_thresh: float,
                    stability_score_thresh: float, crop_n_layers: int, crop_n_points_downscale_factor: int,
                    points_per_batch: int, box_nms_thresh: float, crop_nms_thresh: float, crop_overlap_ratio: float,
                    stability_score_offset: float, mask_threshold: float) -> list[np.ndarray]:
    """SamAutomaticMaskGenerator's steps 1-4 (module docstring) on an (H, W, 3) uint8 image."""
    height, width = image.shape[:2]
    device = next(model.parameters()).device
    boxes_all, masks_all, scores_all, crops_all = [], [], [], []
    for crop, layer in zip(*crop_boxes(height, width, crop_n_layers, crop_overlap_ratio)):
        x0, y0, x1, y1 = crop
        # 2. The crop's embedding and its point prompts, in the processor's resized-input coordinates
        inputs = processor(images=np.ascontiguousarray(image[y0:y1, x0:x1]), return_tensors="pt")
        embedding = model.get_image_embeddings(inputs["pixel_values"].to(device))  # (1, C, h', w')
        resized = [int(v) for v in inputs["reshaped_input_sizes"][0]]  # (h_r, w_r)
        points = point_grid(max(1, int(points_per_side / crop_n_points_downscale_factor ** layer)))
        points = points * np.array([x1 - x0, y1 - y0])  # xy px in the crop
        scale = np.array([resized[1] / (x1 - x0), resized[0] / (y1 - y0)])
        boxes_crop, masks_crop, scores_crop = [], [], []
        for start in range(0, len(points), points_per_batch):
            batch = torch.as_tensor(points[start:start + points_per_batch] * scale, dtype=torch.float)
            out = model(image_embeddings=embedding, input_points=batch[None, :, None].to(device),  # (1, P, 1, 2)
                        input_labels=torch.ones(1, len(batch), 1, dtype=torch.long, device=device),
                        multimask_output=True)
            logits = processor.post_process_masks([out.pred_masks[0].float().cpu()], inputs["original_sizes"],
                                                  inputs["reshaped_input_sizes"], binarize=False)[0]  # (P, 3, h, w)
            logits, iou = logits.flatten(0, 1), out.iou_scores[0].float().cpu().flatten()  # (3P, h, w), (3P,)
            # 3. Filter by predicted IoU and stability, binarise, drop masks cut by a crop edge
            keep = torch.ones_like(iou, dtype=torch.bool)
            if pred_iou_thresh > 0:
                keep &= iou > pred_iou_thresh
            if stability_score_thresh > 0:
                keep &= stability_scores(logits, mask_threshold, stability_score_offset) >= stability_score_thresh
            masks, iou = logits[keep] > mask_threshold, iou[keep]
            boxes = masks_to_boxes(masks) + torch.tensor([x0, y0, x0, y0], dtype=torch.float)
            keep = ~near_crop_edge(boxes, crop, [0, 0, width, height])
            boxes_crop.append(boxes[keep])
            masks_crop.append(masks[keep])
            scores_crop.append(iou[keep])
        boxes, masks, scores = torch.cat(boxes_crop), torch.cat(masks_crop), torch.cat(scores_crop)
        kept = box_nms(boxes, scores, box_nms_thresh)
        full = torch.zeros(len(kept), height, width, dtype=torch.bool)
        full[:, y0:y1, x0:x1] = masks[kept]
        boxes_all.append(boxes[kept])
        masks_all.append(full)
        scores_all.append(scores[kept])
        crops_all.append(torch.full((len(kept),), float((x1 - x0) * (y1 - y0))))
    boxes, masks = torch.cat(boxes_all), torch.cat(masks_all)
    if crop_n_layers > 0:  # 4. prefer masks from smaller crops
        masks = masks[box_nms(boxes, 1 / torch.cat(crops_all), crop_nms_thresh)]
    return [m.numpy() for m in masks]
