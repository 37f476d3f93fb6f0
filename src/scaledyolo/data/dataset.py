"""The data YAML: where each split's images and labels are, and the class names.

```yaml
path: ../datasets/shapes      # root; relative to this YAML's folder (else to the working directory)
train: images/train           # a folder of images (labels: the `images` component -> `labels`)
val: val.txt                  # or a .txt list of image paths
test: {images: images/test, annotations: annotations/test}   # or Pascal VOC XML folder / COCO .json
names: [circle, square]       # or {0: circle, 1: square}; COCO may leave names out
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scaledyolo.data import formats
from scaledyolo.errors import UserError
from scaledyolo.safe_yaml import read_yaml_mapping

SPLITS = ("train", "val", "test")


@dataclass
class SplitSpec:
    """One split. kind: 'folder' (YOLO), 'list' (YOLO, .txt of image paths), 'voc' or 'coco'.

    `sources` are the image folders or list files (several when the YAML gives a list);
    `annotations` is the VOC XML folder or the COCO JSON file.
    """

    name: str
    kind: str
    sources: list[Path]
    annotations: Path | None = None


@dataclass
class DataConfig:
    """A parsed data YAML. `category_ids[i]` is the COCO category id of class i (None unless COCO)."""

    file: Path
    path: Path
    names: list[str]
    splits: dict[str, SplitSpec] = field(default_factory=dict)
    category_ids: list[int] | None = None

    @property
    def nc(self) -> int:
        return len(self.names)

    def split(self, name: str) -> SplitSpec:
        if name not in self.splits:
            raise UserError(f"no '{name}' split (has: {', '.join(self.splits) or 'none'})", self.file)
        return self.splits[name]


def _names(raw: Any, file: Path) -> list[str] | None:
    if raw is None:
        return None
    if isinstance(raw, list):
        return [str(n) for n in raw]
    if isinstance(raw, dict):
        try:
            ids = sorted(int(k) for k in raw)
        except (TypeError, ValueError):
            raise UserError("names: keys of a {id: name} mapping must be integers", file) from None
        if ids != list(range(len(ids))):
            raise UserError(f"names: ids must be 0..{len(ids) - 1} without gaps, got {ids}", file)
        return [str(raw[k] if k in raw else raw[str(k)]) for k in ids]
    raise UserError("names must be a list or a {id: name} mapping", file)


def _resolve(root: Path, value: Any, file: Path, key: str) -> Path:
    if not isinstance(value, (str, Path)) or not str(value):
        raise UserError(f"{key}: expected a path, got {value!r}", file)
    p = Path(value).expanduser()
    p = p if p.is_absolute() else root / p
    if not p.exists():
        raise UserError(f"{key}: {p} does not exist", file)
    return p


def _split(name: str, value: Any, root: Path, file: Path) -> SplitSpec:
    if isinstance(value, dict):
        if "images" not in value or "annotations" not in value:
            raise UserError(f"{name}: a mapping needs 'images' and 'annotations'", file)
        images = _resolve(root, value["images"], file, f"{name}.images")
        ann = _resolve(root, value["annotations"], file, f"{name}.annotations")
        if not images.is_dir():
            raise UserError(f"{name}.images: {images} is not a folder", file)
        if ann.is_dir():
            return SplitSpec(name, "voc", [images], ann)
        if ann.suffix.lower() == ".json":
            return SplitSpec(name, "coco", [images], ann)
        raise UserError(f"{name}.annotations: {ann} is neither a VOC XML folder nor a COCO .json file", file)
    values = value if isinstance(value, list) else [value]
    sources = [_resolve(root, v, file, name) for v in values]
    kinds = {"folder" if s.is_dir() else "list" for s in sources}
    for s in sources:
        if s.is_file() and s.suffix.lower() != ".txt":
            raise UserError(f"{name}: {s} is neither an image folder nor a .txt list of images", file)
    return SplitSpec(name, kinds.pop() if len(kinds) == 1 else "mixed", sources)


def load_data_config(path: str | Path) -> DataConfig:
    """Parse and check a data YAML; every problem is a one-line `UserError` naming the file."""
    file = Path(path).expanduser()
    raw = read_yaml_mapping(file, "data YAML", "expected a mapping with path, train, val and names")
    if not isinstance(raw.get("path") or ".", (str, Path)):
        raise UserError(f"path: expected a folder, got {raw['path']!r}", file)
    given = Path(raw.get("path") or ".").expanduser()
    root = given if given.is_absolute() else (file.parent / given)
    if not root.is_dir() and not given.is_absolute() and given.is_dir():
        root = given  # relative to the working directory, as some YOLO tools write it
    root = root.resolve()
    if not root.is_dir():
        raise UserError(f"path: {root} is not a folder", file)
    names = _names(raw.get("names"), file)
    if not any(raw.get(s) for s in SPLITS):
        raise UserError("no splits: give at least one of train, val, test", file)
    splits = {s: _split(s, raw[s], root, file) for s in SPLITS if raw.get(s)}
    category_ids = None
    coco = [s for s in splits.values() if s.kind == "coco"]
    if coco:
        coco_names, category_ids = formats.coco_categories(coco[0].annotations)
        if names is None:
            names = coco_names
        elif len(names) != len(category_ids):
            raise UserError(f"names has {len(names)} classes but {coco[0].annotations.name} has "
                            f"{len(category_ids)} categories", file)
    if not names:
        raise UserError("missing names: give the class names as a list or {id: name} mapping", file)
    if "nc" in raw and raw["nc"] != len(names):
        raise UserError(f"nc is {raw['nc']} but names lists {len(names)} classes", file)
    return DataConfig(file=file, path=root, names=names, splits=splits, category_ids=category_ids)
