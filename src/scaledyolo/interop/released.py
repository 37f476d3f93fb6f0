"""The officially released weights of each member: where they are published, and how to recognise them.

A member name is not a model (`--weights yolov4-tiny` builds random weights), so `scaledyolo
weights` tells users where the real files are. Sizes and sha256 digests are given only where a
published source states them; elsewhere they are None ("not published"), never guessed.
`identify(path)` hashes a local file (streaming) and names the known file it is, if any.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scaledyolo.errors import UserError

DARKNET_RELEASES = "https://github.com/AlexeyAB/darknet/releases"
SCALED_YOLOV4 = "https://github.com/WongKinYiu/ScaledYOLOv4"


@dataclass(frozen=True)
class ReleasedFile:
    """One published weights file. `size` in bytes and `sha256` (hex) are None where not published."""

    member: str
    file: str
    url: str
    source: str  # where the link (and the size/sha256, when given) is published
    how: str  # how to use it here
    size: int | None = None
    sha256: str | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_CONVERT = "scaledyolo convert {cfg} {file} -o {stem}.pt (or pass the .cfg as --weights, the .weights beside it)"
_OFFICIAL = "use as --weights {file} (read by the restricted unpickler), or scaledyolo convert {file} -o {stem}-ours.pt"


def _darknet(member: str, file: str, **kwargs: Any) -> ReleasedFile:
    stem = file.rsplit(".", 1)[0]
    return ReleasedFile(member, file, f"{DARKNET_RELEASES}/download/darknet_yolo_v4_pre/{file}",
                        f"{DARKNET_RELEASES} (tag darknet_yolo_v4_pre; cfg: cfg/{stem}.cfg of AlexeyAB/darknet)",
                        _CONVERT.format(cfg=f"{stem}.cfg", file=file, stem=stem), **kwargs)


def _official(member: str, file: str, drive_id: str, note: str = "") -> ReleasedFile:
    stem = file.rsplit(".", 1)[0]
    return ReleasedFile(member, file, f"https://drive.google.com/file/d/{drive_id}/view",
                        f"{SCALED_YOLOV4} README (branch yolov4-large), weights column",
                        _OFFICIAL.format(file=file, stem=stem), note=note)


RELEASED: tuple[ReleasedFile, ...] = (
    _darknet("yolov4-tiny", "yolov4-tiny.weights", size=24_251_276,  # of the file that release serves
             sha256="cf9fbfd0f6d4869b35762f56100f50ed05268084078805f0e7989efe5bb8ca87",
             note="COCO, 80 classes, 416x416"),
    _darknet("yolov4-csp", "yolov4-csp.weights", note="COCO, 80 classes, 512x512; also linked from the "
             f"yolov4-csp branch of {SCALED_YOLOV4}"),
    _official("yolov4-p5", "yolov4-p5.pt", "1aXZZE999sHMP1gev60XhNChtHPRMH3Fz", "COCO, 896"),
    _official("yolov4-p5", "yolov4-p5_.pt", "15CL05ZufFk2krbRS993fqlG40Wb0HTyr", "COCO, 896, +BoF"),
    _official("yolov4-p6", "yolov4-p6.pt", "1aB7May8oPYzBqbgwYSZHuATPXyxh9xnf", "COCO, 1280"),
    _official("yolov4-p6", "yolov4-p6_.pt", "1Q8oG3lBVVoS0-UwNOBsDsPkq9VKs9UcC", "COCO, 1280, +BoF"),
    _official("yolov4-p7", "yolov4-p7.pt", "18fGlzgEJTkUEiBG4hW00pyedJKNnYLP3", "COCO, 1536"),
)


def released_files(member: str | None = None) -> list[ReleasedFile]:
    """The known files, all or one member's."""
    return [r for r in RELEASED if member is None or r.member == member.lower()]


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> tuple[int, str]:
    """(size in bytes, sha256 hex) of a file, read in chunks (never all in memory)."""
    path = Path(path)
    if not path.is_file():
        raise UserError("not a file", path)
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def identify(path: str | Path) -> dict[str, Any]:
    """Which released file `path` is: {file, size, sha256, match (a ReleasedFile dict or None), verdict}.

    A match needs a published sha256; a file named like a release whose digest is not published is
    said to be unverifiable, one whose digest differs is said to differ.
    """
    size, digest = sha256_of(path)
    name = Path(path).name
    match = next((r for r in RELEASED if r.sha256 == digest), None)
    if match is not None:
        verdict = f"{name} is the released {match.file} ({match.member}, {match.note})"
    else:
        same_name = next((r for r in RELEASED if r.file == name), None)
        if same_name is None:
            verdict = f"{name} is none of the known released files"
        elif same_name.sha256 is None:
            verdict = (f"{name} is named like the released {same_name.file}, whose sha256 is not published: "
                       "it cannot be verified")
        else:
            verdict = (f"{name} is NOT the released {same_name.file}: sha256 differs "
                       f"(size {size:,} vs published {same_name.size:,} bytes)")
    return {"file": str(path), "size": size, "sha256": digest,
            "match": None if match is None else match.to_dict(), "verdict": verdict}


def format_table(files: list[ReleasedFile]) -> str:
    """What `scaledyolo weights` prints: one block per file."""
    lines = []
    for r in files:
        size = f"{r.size:,} bytes" if r.size is not None else "not published"
        lines += [f"{r.member:<12} {r.file}  ({r.note})", f"    url     {r.url}", f"    source  {r.source}",
                  f"    size    {size}", f"    sha256  {r.sha256 or 'not published'}", f"    use     {r.how}"]
    return "\n".join(lines)
