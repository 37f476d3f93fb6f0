"""A small synthetic validation split (the project's generator), shared by the validation tests."""

from __future__ import annotations

from scaledyolo.data.loader import create_dataloader
from scaledyolo.data.synthetic import make_synthetic_dataset


def synthetic_val_split(root, seed: int, images: int = 5, img_size: int = 128, batch: int = 2):
    """(loader, dataset) over `images` generated pictures in `root`, in rect validation batches."""
    make_synthetic_dataset(root, n_train=1, n_val=images, img_size=img_size, seed=seed)
    return create_dataloader(str(root / "data.yaml"), "val", img_size, batch, rect=True)
