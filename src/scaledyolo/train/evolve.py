"""Hyper-parameter evolution as the official Scaled-YOLOv4 `--evolve` does it.

Each generation trains a short run (`epochs` as given) with one hyper-parameter set and scores it
with the fitness of its final epoch (0.1 mAP50 + 0.9 mAP50-95). The first generation trains the
starting recipe; every later one picks a parent among the 5 fittest so far (chance weighted by
fitness above the weakest of them), multiplies each key by a random factor (mutation probability
0.9, sigma 0.2 scaled by the key's gain and one random draw per generation, factor clipped to
0.3-3.0, drawn again until something changed), then clips each key to its limits and rounds it to 5
decimals. Gains and limits are the official ones (`META`); the keys later YOLO trainers added use
YOLOv5's; `nbs` is not evolved.

Writes into PROJECT/NAME: `evolve.csv` (one row per generation: fitness, metrics, every
hyper-parameter), `evolve.png` (each key against fitness), `hyp_evolved.yaml` (the fittest set,
for `train --hyp hyp_evolved.yaml`) and `genK/` (each generation's run, its weights removed to
bound the disk). Rerunning with `--exist-ok` and the same name continues from evolve.csv.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm import tqdm

from scaledyolo.errors import UserError
from scaledyolo.files import atomic_path, atomic_write_text, plain_name
from scaledyolo.hyp import load_hyp
from scaledyolo.runs import new_run_dir
from scaledyolo.train.evolve_plots import plot_evolution
from scaledyolo.train.trainer import train

# key: (mutation gain 0-1, lower limit, upper limit)
META: dict[str, tuple[float, float, float]] = {
    "lr0": (1, 1e-5, 1e-1), "momentum": (0.1, 0.6, 0.98), "weight_decay": (1, 0.0, 0.001),
    "giou": (1, 0.02, 0.2), "cls": (1, 0.2, 4.0), "cls_pw": (1, 0.5, 2.0), "obj": (1, 0.2, 4.0),
    "obj_pw": (1, 0.5, 2.0), "iou_t": (0, 0.1, 0.7), "anchor_t": (1, 2.0, 8.0), "fl_gamma": (0, 0.0, 2.0),
    "hsv_h": (1, 0.0, 0.1), "hsv_s": (1, 0.0, 0.9), "hsv_v": (1, 0.0, 0.9), "degrees": (1, 0.0, 45.0),
    "translate": (1, 0.0, 0.9), "scale": (1, 0.0, 0.9), "shear": (1, 0.0, 10.0), "perspective": (1, 0.0, 0.001),
    "flipud": (0, 0.0, 1.0), "fliplr": (1, 0.0, 1.0), "mixup": (1, 0.0, 1.0),
    # keys the official hyp.scratch.yaml lacks, with YOLOv5's gains and limits
    "lrf": (1, 0.01, 1.0), "warmup_epochs": (1, 0.0, 5.0), "warmup_momentum": (1, 0.0, 0.95),
    "warmup_bias_lr": (1, 0.0, 0.2), "mosaic": (1, 0.0, 1.0),
}
MUTATION_PROB, SIGMA = 0.9, 0.2
FACTOR_RANGE = (0.3, 3.0)
PARENTS = 5
RESULT_KEYS = ["fitness", "metrics/precision", "metrics/recall", "metrics/mAP50", "metrics/mAP50-95"]


def constrain(hyp: dict[str, float]) -> dict[str, float]:
    """Each evolved key clipped to its limits and rounded to 5 decimals (the others as they are)."""
    out = dict(hyp)
    for key, (_gain, low, high) in META.items():
        out[key] = round(min(max(float(out[key]), low), high), 5)
    return out


def select_parent(rows: list[dict[str, float]], rng: np.random.Generator) -> dict[str, float]:
    """One of the PARENTS fittest rows, with chance weighted by fitness above the weakest of them."""
    top = sorted(rows, key=lambda r: -r["fitness"])[:PARENTS]
    weights = np.array([r["fitness"] for r in top]) - min(r["fitness"] for r in top)
    p = weights / weights.sum() if weights.sum() > 0 else None  # all equal: any of them
    return top[int(rng.choice(len(top), p=p))]


def mutate(parent: dict[str, float], rng: np.random.Generator) -> dict[str, float]:
    """The parent's hyper-parameters with the official multiplicative mutation, then constrained."""
    gains = np.array([g for g, _, _ in META.values()])
    factors = np.ones(len(META))
    while np.all(factors == 1):  # at least one key must change, or the generation repeats its parent
        mutated = rng.random(len(META)) < MUTATION_PROB
        factors = (gains * mutated * rng.standard_normal(len(META)) * rng.random() * SIGMA + 1).clip(*FACTOR_RANGE)
    child = dict(parent)
    for factor, key in zip(factors, META):
        child[key] = float(parent[key]) * float(factor)
    return constrain(child)


def read_evolve_csv(path: Path) -> list[dict[str, float]]:
    """The generations recorded so far (all values as floats)."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _write_evolve_csv(path: Path, rows: list[dict[str, float]]) -> None:
    keys = list(rows[0])
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (int(row[k]) if k == "generation" else f"{row[k]:.6g}") for k in keys})


def _final_results(run_dir: Path) -> dict[str, float]:
    with open(run_dir / "results.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]
    return {k: float(last[k]) for k in RESULT_KEYS}


def evolve(generations: int, hyp: str | dict | list | None = "scratch", project: str | Path = "runs/train",
           name: str = "exp", exist_ok: bool = False, seed: int = 0, **train_kwargs: Any) -> Path:
    """Evolve the hyper-parameters over `generations` trainings of `train(**train_kwargs)`; returns
    the evolution folder (see the module docstring). One process only (not under torchrun)."""
    if generations < 1:
        raise UserError("--evolve needs a number of generations of at least 1")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("--evolve runs in one process; start it without torchrun")
    if not train_kwargs.get("val", True):
        raise UserError("--evolve scores each generation by its validation mAP: drop --noval")
    if not train_kwargs.get("data"):
        raise UserError("train needs --data DATA.yaml")
    plain_name(name, "run name (--name)")
    base = load_hyp(hyp)
    out = Path(project) / name if exist_ok else new_run_dir(project, name)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "evolve.csv"
    rows = read_evolve_csv(csv_path)
    rng = np.random.default_rng([seed, len(rows)])  # a continued evolution does not redraw old mutations
    train_kwargs.update(plots=False, exist_ok=False)
    for _ in range(generations):
        generation = len(rows) + 1
        candidate = mutate(select_parent(rows, rng), rng) if rows else constrain(base)
        candidate = {**base, **{k: v for k, v in candidate.items() if k in base}}
        run = train(hyp=candidate, project=out, name=f"gen{generation}", seed=seed, **train_kwargs)
        rows.append({"generation": float(generation), **_final_results(run), **candidate})
        shutil.rmtree(run / "weights", ignore_errors=True)
        _write_evolve_csv(csv_path, rows)
        best = max(rows, key=lambda r: r["fitness"])
        best_hyp = {k: best[k] for k in base}
        atomic_write_text(out / "hyp_evolved.yaml",
                          f"# generation {int(best['generation'])} of {len(rows)}, fitness {best['fitness']:.5f}\n"
                          + yaml.safe_dump(best_hyp, sort_keys=False))
        plot_evolution(csv_path, list(META))
        tqdm.write(f"evolve: generation {generation} fitness {rows[-1]['fitness']:.5f} "
                   f"(best {best['fitness']:.5f}, generation {int(best['generation'])})")
    tqdm.write(f"evolution: {len(rows)} generations in {csv_path}; best hyper-parameters: {out / 'hyp_evolved.yaml'} "
          f"(train --hyp {out / 'hyp_evolved.yaml'})")
    return out
