"""The split check cache: a JSON file keyed by the sizes and mtimes of every image and label file.

It is written atomically next to the labels, or under ~/.cache/scaledyolo when the label folder
is read-only; a stale or foreign cache (another key or `CACHE_VERSION`) is ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from scaledyolo.data import formats
from scaledyolo.data.dataset import DataConfig, SplitSpec
from scaledyolo.files import atomic_write_text

CACHE_VERSION = 2  # 2: JPEGs lacking only their end marker are used


def _stat_key(paths: list[Path]) -> str:
    h = hashlib.sha1()
    for p in paths:
        try:
            st = p.stat()
            h.update(os.fsencode(p) + f"\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(os.fsencode(p) + b"\0missing\n")
    return h.hexdigest()


def cache_key(cfg: DataConfig, spec: SplitSpec, samples: list[formats.Sample]) -> str:
    files = [s.image for s in samples]
    if spec.kind in ("folder", "list", "mixed"):
        files += [formats.yolo_label_path(s.image) for s in samples]
    elif spec.kind == "voc":
        files += [formats.voc_label_path(s.image, spec.annotations) for s in samples]
    else:
        files.append(spec.annotations)
    files += [s for s in spec.sources if s.is_file()]
    meta = json.dumps({"version": CACHE_VERSION, "names": cfg.names, "kind": spec.kind})
    return hashlib.sha1((meta + _stat_key(files)).encode()).hexdigest()


def _is_writable(folder: Path) -> bool:
    """Writable for real: root ignores permission bits, but a folder marked read-only stays untouched."""
    try:
        mode = folder.stat().st_mode
    except OSError:
        return False
    return os.access(folder, os.W_OK) and bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def cache_paths(spec: SplitSpec, samples: list[formats.Sample]) -> list[Path]:
    """Where the split's cache may live, preferred first: next to the labels, then under ~/.cache."""
    if spec.kind in ("voc", "coco"):
        anchor = spec.annotations
    elif spec.kind == "list":
        anchor = spec.sources[0].with_suffix("")
    else:
        anchor = formats.yolo_label_path(samples[0].image).parent if samples else spec.sources[0]
    primary = anchor.with_name(anchor.name + ".cache")
    fallback_dir = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "scaledyolo"
    digest = hashlib.sha1(os.fsencode(primary.resolve())).hexdigest()[:16]
    out = []
    if _is_writable(primary.parent):
        out.append(primary)
    out.append(fallback_dir / f"{anchor.name}-{digest}.cache")
    return out


def write_cache(path: Path, text: str) -> bool:
    """Write the cache; False (and nothing left behind) where the folder is not writable after all."""
    try:
        atomic_write_text(path, text)
    except OSError:
        return False
    return True


def load_cache(paths: list[Path], key: str) -> tuple[dict[str, Any], Path] | None:
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("version") == CACHE_VERSION and data.get("key") == key:
            return data, path
    return None
