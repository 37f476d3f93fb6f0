"""Dataset and DataLoader: checked samples -> augmented, letterboxed uint8 batches with targets.

Reproducibility: the sampler hands every item its own random seed (drawn from `seed` and the epoch),
so a batch's augmentation is the same whatever the number of workers. Each batch is
`(imgs uint8 (B, 3, H, W) RGB, targets (n, 6) [image_index, class, cx, cy, w, h] 0-1, paths, shapes)`
with `shapes[i] = ((h0, w0), ((rh, rw), (padw, padh)))` mapping original pixels to batch pixels
(None for a mosaic, which has no single original).
"""

from __future__ import annotations

import logging
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from scaledyolo.data import augment as aug
from scaledyolo.data.checks import require_images, scan_split
from scaledyolo.data.image_decode import ImageError, decode_image
from scaledyolo.data.dataset import DataConfig, load_data_config
from scaledyolo.errors import RunError
from scaledyolo.hyp import load_hyp

LOGGER = logging.getLogger("scaledyolo.data")

Shapes = tuple[tuple[int, int], tuple[tuple[float, float], tuple[float, float]]] | None


class YoloDataset(Dataset):
    """The usable images of one split with their labels, augmented on the fly when `augment`.

    Public: `image_files`, `labels` ((n, 5) [cls, cx, cy, w, h] 0-1), `shapes` ((N, 2) original h, w),
    `image_ids`, `problems` (skipped files, `{file, image, problem}`), `notes` (fixed labels), `warned`
    (images used with a warning), `names`.
    With `rect` the images are sorted by aspect ratio and `batch_shapes` gives each batch's (h, w).
    """

    def __init__(self, data_cfg: DataConfig | str, split: str, img_size: int = 640, batch_size: int = 16,
                 hyp: dict[str, float] | str | None = None, augment: bool = False, rect: bool = False,
                 cache: bool = False, stride: int = 32, pad: float | None = None, seed: int = 0) -> None:
        cfg = data_cfg if isinstance(data_cfg, DataConfig) else load_data_config(data_cfg)
        data = scan_split(cfg, split)
        require_images(data, split, cfg)
        self.data_cfg, self.split, self.names = cfg, split, list(cfg.names)
        self.img_size, self.stride, self.augment, self.rect, self.seed = img_size, stride, augment, rect, seed
        self.hyp = load_hyp(hyp if hyp is not None else "scratch")
        self.mosaic = augment and not rect and self.hyp["mosaic"] > 0
        self.image_files: list[str] = list(data.image_files)
        self.labels: list[np.ndarray] = list(data.labels)
        self.shapes: np.ndarray = data.shapes
        self.image_ids: list[Any] = list(data.image_ids)
        self.problems, self.notes, self.cache_file = data.problems, data.notes, data.cache_file
        self.warned = data.warned
        self.batch_shapes: np.ndarray | None = None
        self.batch_index = np.arange(len(self)) // max(batch_size, 1)
        if rect:
            self._make_rect(batch_size, 0.5 if pad is None and not augment else (pad or 0.0))
        self.ram: list[tuple[np.ndarray, tuple[int, int]] | None] = [None] * len(self)
        if cache:
            self._cache_images()

    def __len__(self) -> int:
        return len(self.image_files)

    @property
    def nc(self) -> int:
        return len(self.names)

    def _make_rect(self, batch_size: int, pad: float) -> None:
        """Sort by aspect ratio so each batch is letterboxed to its own smallest stride-multiple shape."""
        ar = self.shapes[:, 0] / self.shapes[:, 1]
        order = ar.argsort(kind="stable")
        self.image_files = [self.image_files[i] for i in order]
        self.labels = [self.labels[i] for i in order]
        self.image_ids = [self.image_ids[i] for i in order]
        self.shapes = self.shapes[order]
        ar = ar[order]
        nb = int(self.batch_index[-1]) + 1
        shapes = np.ones((nb, 2))
        for b in range(nb):
            ari = ar[self.batch_index == b]
            lo, hi = ari.min(), ari.max()
            if hi < 1:
                shapes[b] = [hi, 1]
            elif lo > 1:
                shapes[b] = [1, 1 / lo]
        self.batch_shapes = (np.ceil(shapes * self.img_size / self.stride + pad) * self.stride).astype(np.int64)

    def _cache_images(self) -> None:
        gb = 0.0
        for i in range(len(self)):
            img, hw0, _ = self.load_image(i)
            self.ram[i] = (img, hw0)
            gb += img.nbytes / 1e9
        LOGGER.info("cached %d %s images in RAM (%.2f GB)", len(self), self.split, gb)

    def load_image(self, index: int) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
        """BGR image resized so its long side is `img_size`, its original (h, w) and its new (h, w)."""
        cached = self.ram[index]
        if cached is not None:
            return cached[0], cached[1], cached[0].shape[:2]
        img = decode_image(self.image_files[index])
        h0, w0 = img.shape[:2]
        r = self.img_size / max(h0, w0)
        if r != 1:
            interp = cv2.INTER_AREA if r < 1 and not self.augment else cv2.INTER_LINEAR
            img = cv2.resize(img, (max(1, round(w0 * r)), max(1, round(h0 * r))), interpolation=interp)
        return img, (h0, w0), img.shape[:2]

    def _load_for_mosaic(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.load_image(index)[0], self.labels[index]

    def _mosaic(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        indices = [index] + [int(i) for i in rng.integers(0, len(self), 3)]
        return aug.mosaic4(self._load_for_mosaic, indices, self.img_size, rng, self.hyp)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, str, Shapes]:
        index, seed = item if isinstance(item, tuple) else (item, None)
        rng = np.random.default_rng(seed if seed is not None else (self.seed, index))
        for _ in range(10):
            try:
                return self._get(index, rng)
            except ImageError as exc:
                # The file was fine when checked but is not now: report it and use another sample.
                LOGGER.warning("%s: %s; using another image", self.image_files[index], exc)
                index = int(rng.integers(0, len(self)))
        raise RunError(f"images of split '{self.split}' became unreadable after they were checked",
                       self.data_cfg.file)

    def _get(self, index: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, str, Shapes]:
        hyp = self.hyp
        shapes: Shapes = None
        if self.mosaic and rng.random() < hyp["mosaic"]:
            img, labels = self._mosaic(index, rng)
            if rng.random() < hyp["mixup"]:
                img2, labels2 = self._mosaic(int(rng.integers(0, len(self))), rng)
                img, labels = aug.mixup(img, labels, img2, labels2, rng)
        else:
            img, (h0, w0), (h, w) = self.load_image(index)
            shape = self.batch_shapes[self.batch_index[index]] if self.batch_shapes is not None else self.img_size
            img, (rw, rh), (padw, padh) = aug.letterbox(img, shape, auto=False, scaleup=self.augment)
            shapes = ((h0, w0), ((h / h0 * rh, w / w0 * rw), (padw, padh)))
            labels = self.labels[index]
            labels = aug.normalized_to_pixels(labels, rw * w, rh * h, padw, padh) if len(labels) else np.zeros((0, 5))
            if self.augment:
                img, labels = aug.random_perspective(img, labels, rng, degrees=hyp["degrees"],
                                                     translate=hyp["translate"], scale=hyp["scale"],
                                                     shear=hyp["shear"], perspective=hyp["perspective"])
        if self.augment:
            img = np.ascontiguousarray(img)
            aug.augment_hsv(img, rng, hyp["hsv_h"], hyp["hsv_s"], hyp["hsv_v"])
        labels = aug.pixels_to_normalized(labels, img.shape[1], img.shape[0]) if len(labels) else np.zeros((0, 5))
        if self.augment:
            img, labels = aug.flip(img, labels, rng, hyp["flipud"], hyp["fliplr"])
        out = torch.zeros((len(labels), 6))
        if len(labels):
            out[:, 1:] = torch.from_numpy(labels.astype(np.float32))
        chw = np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1))
        return torch.from_numpy(chw), out, self.image_files[index], shapes


def collate(batch: Sequence[tuple[torch.Tensor, torch.Tensor, str, Shapes]]
            ) -> tuple[torch.Tensor, torch.Tensor, list[str], list[Shapes]]:
    """Stack images (padding smaller ones bottom/right to the largest, boxes renormalised) and
    concatenate targets with their image index in column 0.

    The copy is done in numpy: torch's multi-threaded copy is ~50x slower on a busy CPU.
    """
    imgs, labels, paths, shapes = zip(*batch)
    hmax, wmax = max(i.shape[1] for i in imgs), max(i.shape[2] for i in imgs)
    out_imgs = np.full((len(imgs), 3, hmax, wmax), aug.PAD_VALUE, dtype=np.uint8)
    targets = []
    for i, (img, lab) in enumerate(zip(imgs, labels)):
        h, w = img.shape[1:]
        out_imgs[i, :, :h, :w] = img.numpy()
        lab = lab.clone()
        lab[:, 0] = i
        if (h, w) != (hmax, wmax):
            lab[:, [2, 4]] *= w / wmax
            lab[:, [3, 5]] *= h / hmax
        targets.append(lab)
    return torch.from_numpy(out_imgs), torch.cat(targets, 0), list(paths), list(shapes)


class SeededSampler(Sampler):
    """Yields `(index, seed)` pairs: the order (shuffled or not, sharded under DDP) and a per-item
    augmentation seed, both fixed by `seed` and the epoch. Each pass moves to the next epoch;
    `set_epoch` sets it explicitly (e.g. on resume)."""

    def __init__(self, dataset: Dataset, shuffle: bool, seed: int, distributed: bool | None = None) -> None:
        self.n, self.shuffle, self.seed, self.epoch = len(dataset), shuffle, seed, 0
        self.rank = 0
        self.base: DistributedSampler | None = None
        if distributed is None:
            distributed = dist.is_available() and dist.is_initialized()
        if distributed:
            self.base = DistributedSampler(dataset, shuffle=shuffle, seed=seed)
            self.rank = dist.get_rank()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base) if self.base is not None else self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.base is not None:
            self.base.set_epoch(self.epoch)
            order = list(self.base)
        elif self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        seeds = np.random.default_rng([self.seed, self.epoch, self.rank]).integers(0, 2**62, len(order))
        self.epoch += 1
        return iter(zip(order, (int(s) for s in seeds)))


class BatchShardSampler(Sampler):
    """Rank `rank` of `world` gets whole batches `rank, rank + world, ...` of an unshuffled split.

    For sharded validation: rect batches stay the batches (and shapes) one process would see, no
    image is repeated to even out the shards, and every image is seen exactly once over all ranks.
    """

    def __init__(self, n: int, batch_size: int, rank: int, world: int) -> None:
        self.n, self.batch_size, self.rank, self.world = n, batch_size, rank, world

    def _indices(self) -> list[int]:
        starts = range(self.rank * self.batch_size, self.n, self.world * self.batch_size)
        return [i for start in starts for i in range(start, min(start + self.batch_size, self.n))]

    def __len__(self) -> int:
        return len(self._indices())

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices())


def _worker_init(_: int) -> None:
    cv2.setNumThreads(0)  # the workers are the parallelism; OpenCV threads would oversubscribe


def create_dataloader(data_cfg: DataConfig | str, split: str, img_size: int, batch_size: int,
                      hyp: dict[str, float] | str | None = None, augment: bool = False, rect: bool = False,
                      workers: int = 0, shuffle: bool = False, seed: int = 0, cache: bool = False,
                      stride: int = 32, distributed: bool | None = None, pad: float | None = None,
                      shard: tuple[int, int] | None = None, pin_memory: bool | None = None
                      ) -> tuple[DataLoader, YoloDataset]:
    """A DataLoader over one split and its dataset (see the module doc for the batch format).

    Train: `augment=True, shuffle=True` (mosaic etc. per `hyp`); validation: `rect=True` gives
    aspect-ratio-sorted batches letterboxed to multiples of `stride` without mosaic.
    Under torch.distributed each rank gets its own shard (DistributedSampler); `distributed=False`
    gives one rank the whole split (e.g. validation on rank 0). `pad` (in strides) enlarges rect
    batch shapes: default 0.5 for validation as the official test.py, 0 when augmenting.
    `shard=(rank, world)` gives this rank whole unshuffled batches (`BatchShardSampler`, for validation
    on every rank). `pin_memory` (default: whether CUDA exists) should say whether batches go to a GPU:
    pinning opens a CUDA context on the current GPU.
    """
    dataset = YoloDataset(data_cfg, split, img_size=img_size, batch_size=batch_size, hyp=hyp, augment=augment,
                          rect=rect, cache=cache, stride=stride, pad=pad, seed=seed)
    batch_size = max(1, min(batch_size, len(dataset)))
    sampler: Sampler = (BatchShardSampler(len(dataset), batch_size, *shard) if shard is not None else
                        SeededSampler(dataset, shuffle=shuffle and not rect, seed=seed, distributed=distributed))
    pin = torch.cuda.is_available() if pin_memory is None else pin_memory
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate,
                        pin_memory=pin, persistent_workers=workers > 0,
                        worker_init_fn=_worker_init if workers > 0 else None, drop_last=False)
    return loader, dataset

