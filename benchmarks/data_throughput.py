"""Images per second of the augmenting training loader (mosaic, random affine, HSV, flips).

    python benchmarks/data_throughput.py [DATA.yaml] --img 416 --batch 16 --workers 0 2 --batches 20

Without a data YAML it uses the raccoon images (/work/shared/datasets/raccoon, VOC layout) when
present, else a synthetic set. The first batch (worker start-up) is not timed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml

from scaledyolo.data.loader import create_dataloader
from scaledyolo.data.synthetic import make_synthetic_dataset

RACCOON = Path("/work/shared/datasets/raccoon")


def default_data(tmp: Path) -> Path:
    if (RACCOON / "images").is_dir():
        split = {"images": str(RACCOON / "images"), "annotations": str(RACCOON / "annotations")}
        out = tmp / "raccoon.yaml"
        out.write_text(yaml.safe_dump({"train": split, "val": split, "names": ["raccoon"]}))
        return out
    return make_synthetic_dataset(tmp / "synthetic", n_train=200, n_val=8, img_size=512)


def measure(data: Path, img: int, batch: int, workers: int, batches: int, cache: bool) -> float:
    loader, _ = create_dataloader(data, "train", img, batch, augment=True, shuffle=True, workers=workers,
                                  cache=cache)
    it = iter(loader)
    next(it)
    n, start = 0, time.perf_counter()
    for _ in range(batches):
        try:
            imgs = next(it)[0]
        except StopIteration:
            it = iter(loader)
            imgs = next(it)[0]
        n += len(imgs)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?", help="data YAML (default: raccoon or synthetic)")
    parser.add_argument("--img", type=int, default=416)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--cache", action="store_true", help="decode and resize every image once into RAM first")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else default_data(Path(tmp))
        print(f"data {data}, img {args.img}, batch {args.batch}, mosaic on, cache {args.cache}")
        for workers in args.workers:
            rate = measure(data, args.img, args.batch, workers, args.batches, args.cache)
            print(f"workers {workers}: {rate:.1f} images/s")


if __name__ == "__main__":
    main()
