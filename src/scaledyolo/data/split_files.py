"""Which files a split holds, as its layout lists them, before any image is opened.

A folder of images (labels beside them or under `labels/`), a `.txt` list, Pascal VOC or COCO
annotations: each becomes a list of `formats.Sample`, and what is wrong with the listing itself
(a listed file missing, a non-image in an image folder) becomes a problem record.
"""

from __future__ import annotations

from pathlib import Path

from scaledyolo.data import formats
from scaledyolo.data.dataset import DataConfig, SplitSpec
from scaledyolo.errors import UserError
from scaledyolo.files import display_path


def problem_record(file: str | Path, problem: str, image: str | Path | None = None) -> dict[str, str]:
    """A problem (or note) record: the file at fault, the image it concerns (default: the same file), what.

    Paths are display text (`display_path`): a file name need not be UTF-8, a report must print.
    """
    return {"file": display_path(file), "image": display_path(file if image is None else image), "problem": problem}


def _read_list(list_file: Path, root: Path, problems: list[dict[str, str]]) -> list[Path]:
    """The images a .txt list names (a byte-order mark, as Windows editors write, is allowed)."""
    try:
        text = list_file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read this image list ({exc})", list_file) from None
    images = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line).expanduser()
        if not p.is_absolute():
            p = list_file.parent / p if (list_file.parent / p).exists() else root / p
        if not p.is_file():
            problems.append(problem_record(p, f"listed in {list_file.name} but not found"))
        elif not formats.is_image_file(p):
            problems.append(problem_record(p, "not an image file (ignored)"))
        else:
            images.append(p)
    return images


def _folder_images(folder: Path, problems: list[dict[str, str]]) -> list[Path]:
    images, others = formats.list_folder(folder)
    stems = {p.with_suffix("") for p in images}
    for other in others:
        if other.suffix.lower() == ".txt" and other.with_suffix("") in stems:
            continue  # a label kept next to its image
        problems.append(problem_record(other, "not an image file (ignored)"))
    return images


def read_split(cfg: DataConfig, spec: SplitSpec) -> tuple[list[formats.Sample], list[dict[str, str]]]:
    """The split's samples as the layout gives them, plus files found unusable before any image is opened."""
    problems: list[dict[str, str]] = []
    if spec.kind == "coco":
        coco = formats.read_coco(spec.sources[0], spec.annotations)
        problems += [problem_record(spec.annotations, problem) for problem in coco.problems]
        samples = []
        for s in coco.samples:
            if s.image.is_file():
                samples.append(s)
            else:
                problems.append(problem_record(s.image, f"listed in {spec.annotations.name} but not found"))
        return samples, problems
    images: list[Path] = []
    for source in spec.sources:
        images += _folder_images(source, problems) if source.is_dir() else _read_list(source, cfg.path, problems)
    if spec.kind == "voc":
        return formats.read_voc(images, spec.annotations, cfg.names), problems
    return formats.read_yolo(images), problems
