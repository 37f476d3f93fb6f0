"""`scaledyolo data`: what a dataset holds, what is wrong with it, how the anchors fit, and a picture
of one augmented training batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from scaledyolo.data.anchors import anchor_fit, label_wh
from scaledyolo.data.checks import scan_split
from scaledyolo.data.dataset import load_data_config
from scaledyolo.data.loader import create_dataloader
from scaledyolo.drawing import tile_batch, write_image
from scaledyolo.logs import summarize_files
from scaledyolo.models.spec import DEFAULT_MEMBER, ModelSpec, get_spec

COCO_SMALL, COCO_MEDIUM = 32**2, 96**2


def _stats(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    return {"min": float(values.min()), "median": float(np.median(values)), "mean": float(values.mean()),
            "max": float(values.max())}


def data_report(data_yaml: str | Path, model: str | ModelSpec = DEFAULT_MEMBER, img_size: int = 640, thr: float = 4.0
                ) -> dict[str, dict[str, Any]]:
    """Per split: usable `images`, `boxes`, `backgrounds`, `problems` [{file, problem}], `fixes`
    (labels clipped or deduplicated), `warnings` (images used despite a defect), per-class box counts,
    box sizes in original pixels (and COCO small/medium/large counts), and the anchor fit (BPR at
    `thr`) of `model` at `img_size`. Ends with the one-line summary of skipped files (logged)."""
    cfg = load_data_config(data_yaml)
    spec = model if isinstance(model, ModelSpec) else get_spec(model)
    anchors = np.array(spec.anchors, dtype=np.float64).reshape(-1, 2)
    report: dict[str, dict[str, Any]] = {}
    for split in cfg.splits:
        data = scan_split(cfg, split)
        labels = data.labels
        per_box_hw = [np.repeat(data.shapes[i:i + 1], len(lab), 0) for i, lab in enumerate(labels)]
        all_labels = np.concatenate(labels, 0) if labels else np.zeros((0, 5))
        hw = np.concatenate(per_box_hw, 0) if per_box_hw else np.zeros((0, 2))
        w_px, h_px = all_labels[:, 3] * hw[:, 1], all_labels[:, 4] * hw[:, 0]
        area = w_px * h_px
        counts = np.bincount(all_labels[:, 0].astype(np.int64), minlength=cfg.nc) if len(all_labels) else \
            np.zeros(cfg.nc, np.int64)
        wh = label_wh(data.shapes, labels, img_size)
        bpr, aat = anchor_fit(wh, anchors, thr) if len(wh) else (None, None)
        report[split] = {
            "images": len(data.image_files),
            "boxes": int(len(all_labels)),
            "backgrounds": data.backgrounds,
            "problems": [{"file": p["file"], "problem": p["problem"]} for p in data.problems],
            "fixes": [{"file": p["file"], "problem": p["problem"]} for p in data.notes],
            "warnings": [{"file": p["file"], "problem": p["problem"]} for p in data.warned],
            "classes": {name: int(c) for name, c in zip(cfg.names, counts)},
            "box_size": {"width_px": _stats(w_px), "height_px": _stats(h_px),
                         "small": int((area < COCO_SMALL).sum()),
                         "medium": int(((area >= COCO_SMALL) & (area < COCO_MEDIUM)).sum()),
                         "large": int((area >= COCO_MEDIUM).sum())},
            "anchors": {"model": spec.name, "img": img_size, "anchor_t": thr, "bpr": bpr, "anchors_per_box": aat},
        }
    summarize_files("data", [p for r in report.values() for p in r["problems"]],
                    [w for r in report.values() for w in r["warnings"]])
    return report


def format_report(report: dict[str, dict[str, Any]]) -> str:
    """The report as a short human-readable text."""
    lines = []
    for split, r in report.items():
        a = r["anchors"]
        lines.append(f"{split}: {r['images']} images ({r['backgrounds']} background), {r['boxes']} boxes, "
                     f"{len(r['problems'])} problem(s), {len(r['fixes'])} label fix(es)")
        lines.append("  classes: " + ", ".join(f"{n} {c}" for n, c in r["classes"].items()))
        bs = r["box_size"]
        if bs["width_px"]:
            lines.append(f"  box size (px): width median {bs['width_px']['median']:.0f} "
                         f"[{bs['width_px']['min']:.0f}-{bs['width_px']['max']:.0f}], height median "
                         f"{bs['height_px']['median']:.0f} [{bs['height_px']['min']:.0f}-{bs['height_px']['max']:.0f}]; "
                         f"small {bs['small']}, medium {bs['medium']}, large {bs['large']}")
        if a["bpr"] is not None:
            lines.append(f"  anchors of {a['model']} at {a['img']}: best possible recall {a['bpr']:.4f} "
                         f"({a['anchors_per_box']:.2f} anchors per box, anchor_t {a['anchor_t']:g})")
        for p in r["problems"]:
            lines.append(f"  problem: {p['file']}: {p['problem']}")
        for w in r["warnings"]:
            lines.append(f"  used with a warning: {w['file']}: {w['problem']}")
    return "\n".join(lines)


def write_preview(data_yaml: str | Path, file: str | Path, img_size: int = 320, batch_size: int = 4,
                  hyp: str | dict[str, float] | None = "scratch", seed: int = 0) -> Path:
    """Draw one augmented training batch (mosaic etc. per `hyp`) with boxes and class names."""
    cfg = load_data_config(data_yaml)
    split = "train" if "train" in cfg.splits else next(iter(cfg.splits))
    loader, dataset = create_dataloader(cfg, split, img_size, batch_size, hyp=hyp, augment=True, shuffle=True,
                                        seed=seed)
    imgs, targets, _, _ = next(iter(loader))
    return write_image(file, tile_batch(imgs, targets, dataset.names, min_width=512, cols=2))
