"""Autoanchor: how well a model's anchors fit a dataset, and better anchors when they do not.

Fit is the best possible recall (BPR): the fraction of labels whose width and height are within a
factor `thr` (hyp `anchor_t`, 4) of some anchor, the loss's own assignment rule. Below 0.98 new
anchors come from k-means on the label sizes (whitened) refined by a genetic search, as in the
official training; they replace the model's only when their BPR is higher.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

LOGGER = logging.getLogger("scaledyolo.data")
BPR_THRESHOLD = 0.98
MAX_EVOLVE_POINTS = 20000


def label_wh(shapes: np.ndarray, labels: list[np.ndarray], img_size: int,
             rng: np.random.Generator | None = None) -> np.ndarray:
    """Label widths and heights (N, 2) in pixels once each image's long side is `img_size`.

    `shapes` are (h, w) per image. With `rng`, each image is also zoomed by U(0.9, 1.1) as the
    training augmentation would.
    """
    wh_img = shapes[:, ::-1].astype(np.float64)
    wh_img = img_size * wh_img / wh_img.max(1, keepdims=True)
    if rng is not None:
        wh_img = wh_img * rng.uniform(0.9, 1.1, size=(len(wh_img), 1))
    parts = [lab[:, 3:5].astype(np.float64) * s for s, lab in zip(wh_img, labels) if len(lab)]
    return np.concatenate(parts, 0) if parts else np.zeros((0, 2))


def _ratio_metric(wh: np.ndarray, k: np.ndarray) -> np.ndarray:
    """(N, K): for each label and anchor, the worse of the two side ratios (1 = identical)."""
    r = wh[:, None] / k[None]
    return np.minimum(r, 1 / r).min(2)


def anchor_fit(wh: np.ndarray, anchors: np.ndarray, thr: float = 4.0) -> tuple[float, float]:
    """(best possible recall, mean anchors per label above threshold) of anchors (K, 2) on wh (N, 2)."""
    if len(wh) == 0:
        return 1.0, 0.0
    x = _ratio_metric(wh, anchors.reshape(-1, 2))
    return float((x.max(1) > 1 / thr).mean()), float((x > 1 / thr).sum(1).mean())


def kmeans(points: np.ndarray, k: int, rng: np.random.Generator, iters: int = 30) -> np.ndarray:
    """Plain Lloyd k-means with k-means++ seeding; returns (k, d) centres."""
    centres = [points[rng.integers(len(points))]]
    for _ in range(1, k):
        d2 = ((points[:, None] - np.array(centres)[None]) ** 2).sum(2).min(1)
        total = d2.sum()
        centres.append(points[rng.choice(len(points), p=d2 / total)] if total > 0 else points[rng.integers(len(points))])
    c = np.array(centres, dtype=np.float64)
    for _ in range(iters):
        assign = ((points[:, None] - c[None]) ** 2).sum(2).argmin(1)
        new = np.array([points[assign == j].mean(0) if (assign == j).any() else c[j] for j in range(k)])
        if np.allclose(new, c):
            break
        c = new
    return c


def kmean_anchors(wh: np.ndarray, n: int, thr: float = 4.0, gen: int = 1000, seed: int = 0) -> np.ndarray:
    """`n` anchors (n, 2) sorted small to large: k-means on whitened label sizes, then `gen`
    generations of random multiplicative mutation kept when they raise the fitness
    (mean best ratio over labels that pass `thr`)."""
    rng = np.random.default_rng(seed)
    wh = wh[(wh >= 2.0).any(1)]  # sizes under 2 px carry no shape information
    if len(wh) == 0:
        raise ValueError("no labels of at least 2 pixels to compute anchors from")
    if len(wh) > MAX_EVOLVE_POINTS:
        wh = wh[rng.choice(len(wh), MAX_EVOLVE_POINTS, replace=False)]
    sigma = wh.std(0)
    sigma[sigma == 0] = 1.0
    if len(wh) >= n:
        k = kmeans(wh / sigma, n, rng) * sigma
    else:
        k = wh[rng.integers(0, len(wh), n)] * rng.uniform(0.8, 1.2, (n, 2))

    def fitness(anchors: np.ndarray) -> float:
        best = _ratio_metric(wh, anchors).max(1)
        return float((best * (best > 1 / thr)).mean())

    f, mutation_p, mutation_sigma = fitness(k), 0.9, 0.1
    for _ in range(gen):
        v = np.ones_like(k)
        while (v == 1).all():
            v = ((rng.random(k.shape) < mutation_p) * rng.random() * rng.standard_normal(k.shape) * mutation_sigma
                 + 1).clip(0.3, 3.0)
        kg = (k * v).clip(min=2.0)
        fg = fitness(kg)
        if fg > f:
            f, k = fg, kg
    return k[np.argsort(k.prod(1))]


def check_anchors(dataset: Any, model: torch.nn.Module, thr: float = 4.0, img_size: int = 640, gen: int = 1000,
                  seed: int = 0) -> dict[str, Any]:
    """Measure the model's anchor fit on `dataset` (`.shapes`, `.labels`) and, when BPR < 0.98,
    replace `model.detect.anchors` and `model.spec.anchors` with evolved anchors if they fit better.

    Returns {bpr, aat, updated, anchors (in use afterwards, pixels per level), new_bpr (when tried)}.
    """
    model = getattr(model, "module", model)  # DDP / DataParallel wrappers
    detect = model.detect
    current = detect.anchors.detach().cpu().numpy().astype(np.float64)
    rng = np.random.default_rng(seed)
    wh = label_wh(np.asarray(dataset.shapes), dataset.labels, img_size, rng)
    bpr, aat = anchor_fit(wh, current, thr)
    report: dict[str, Any] = {"bpr": bpr, "aat": aat, "updated": False, "anchors": current.tolist()}
    LOGGER.info("anchors: %.2f anchors/target, best possible recall %.4f", aat, bpr)
    if bpr >= BPR_THRESHOLD or len(wh) == 0:
        return report
    try:
        new = kmean_anchors(wh, current.shape[0] * current.shape[1], thr=thr, gen=gen, seed=seed)
    except ValueError as exc:
        LOGGER.warning("anchors: cannot recompute (%s); keeping the model's", exc)
        return report
    new_bpr, _ = anchor_fit(wh, new, thr)
    report["new_bpr"] = new_bpr
    if new_bpr <= bpr:
        LOGGER.info("anchors: evolved anchors (BPR %.4f) are no better; keeping the model's", new_bpr)
        return report
    new = np.round(new, 2).reshape(current.shape)  # the spec stores them as plain numbers: keep both equal
    with torch.no_grad():
        detect.anchors.copy_(torch.as_tensor(new, dtype=detect.anchors.dtype))
    model.spec.anchors = [[float(v) for v in level.reshape(-1)] for level in new]
    report.update(updated=True, anchors=new.tolist())
    LOGGER.warning("anchors: BPR %.4f < %.2f, replaced by evolved anchors with BPR %.4f: %s", bpr, BPR_THRESHOLD,
                   new_bpr, model.spec.anchors)
    return report
