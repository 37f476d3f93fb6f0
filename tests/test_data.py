"""Data: the three layouts read exactly, damaged data reported, augmentation keeps boxes on their
objects, batches and targets, the check cache, autoanchor, the synthetic set and `scaledyolo data`."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from scaledyolo import cli
from scaledyolo.data import augment as aug
from scaledyolo.data import checks
from scaledyolo.data.anchors import anchor_fit, check_anchors, label_wh
from scaledyolo.data.dataset import load_data_config
from scaledyolo.data.loader import YoloDataset, create_dataloader
from scaledyolo.data.synthetic import NAMES, make_synthetic_dataset
from scaledyolo.errors import UserError

RACCOON = Path(__file__).parent / "fixtures" / "raccoon"


def _voc_boxes(xml: Path) -> list[tuple[float, float, float, float]]:
    root = ET.parse(xml).getroot()
    return [tuple(float(o.find(f"bndbox/{t}").text) for t in ("xmin", "ymin", "xmax", "ymax"))
            for o in root.iter("object")]


def _image_wh(path: Path) -> tuple[int, int]:
    h, w = cv2.imread(str(path)).shape[:2]
    return w, h


def _write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def raccoon_truth() -> dict[str, list[tuple[float, float, float, float]]]:
    """Ground truth straight from the XML: image name -> pixel boxes."""
    return {xml.stem + ".jpg": _voc_boxes(xml) for xml in sorted((RACCOON / "annotations").glob("*.xml"))}


def make_voc(root: Path) -> Path:
    shutil.copytree(RACCOON / "images", root / "images")
    shutil.copytree(RACCOON / "annotations", root / "annotations")
    split = {"images": "images", "annotations": "annotations"}
    return _write_yaml(root / "voc.yaml", {"path": str(root), "train": split, "val": split, "names": ["raccoon"]})


def make_yolo(root: Path, truth: dict) -> Path:
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for name, boxes in truth.items():
            shutil.copy(RACCOON / "images" / name, root / "images" / split / name)
            w, h = _image_wh(RACCOON / "images" / name)
            lines = [f"0 {(x1 + x2) / 2 / w:.8f} {(y1 + y2) / 2 / h:.8f} {(x2 - x1) / w:.8f} {(y2 - y1) / h:.8f}"
                     for x1, y1, x2, y2 in boxes]
            (root / "labels" / split / name).with_suffix(".txt").write_text("\n".join(lines) + "\n")
    return _write_yaml(root / "yolo.yaml", {"path": str(root), "train": "images/train", "val": "images/val",
                                            "names": {0: "raccoon"}})


def make_coco(root: Path, truth: dict) -> Path:
    shutil.copytree(RACCOON / "images", root / "images")
    images, anns = [], []
    for i, (name, boxes) in enumerate(truth.items()):
        w, h = _image_wh(RACCOON / "images" / name)
        images.append({"id": 100 + i, "file_name": name, "width": w, "height": h})
        for x1, y1, x2, y2 in boxes:
            anns.append({"id": len(anns) + 1, "image_id": 100 + i, "category_id": 7, "bbox": [x1, y1, x2 - x1, y2 - y1],
                         "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    anns.append({"id": 999, "image_id": 100, "category_id": 7, "bbox": [0, 0, 50, 50], "iscrowd": 1})
    cats = [{"id": 7, "name": "raccoon"}, {"id": 3, "name": "dog"}]
    (root / "ann.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    split = {"images": "images", "annotations": "ann.json"}
    return _write_yaml(root / "coco.yaml", {"path": str(root), "train": split, "val": split})


def _pixel_boxes(ds: YoloDataset) -> dict[str, list[tuple[int, np.ndarray]]]:
    out = {}
    for f, lab, (h, w) in zip(ds.image_files, ds.labels, ds.shapes):
        boxes = aug.normalized_to_pixels(lab, w, h)
        out[Path(f).name] = sorted(((int(b[0]), tuple(b[1:])) for b in boxes), key=lambda cb: cb[1])
    return out


def test_three_layouts_read_the_same_samples(tmp_path, raccoon_truth):
    yamls = {"voc": make_voc(tmp_path / "voc"), "yolo": make_yolo(tmp_path / "yolo", raccoon_truth),
             "coco": make_coco(tmp_path / "coco", raccoon_truth)}
    n_boxes = sum(len(b) for b in raccoon_truth.values())
    for layout, y in yamls.items():
        cfg = load_data_config(y)
        for split in ("train", "val"):
            ds = YoloDataset(cfg, split, img_size=320)
            assert len(ds) == len(raccoon_truth), layout
            assert sum(len(lab) for lab in ds.labels) == n_boxes, layout
            assert ds.problems == []
            got = _pixel_boxes(ds)
            raccoon = cfg.names.index("raccoon")
            for name, boxes in raccoon_truth.items():
                assert [c for c, _ in got[name]] == [raccoon] * len(boxes)
                want = sorted(boxes)
                have = [b for _, b in got[name]]
                np.testing.assert_allclose(np.array(have), np.array(want), atol=1e-3, err_msg=f"{layout} {name}")
    coco = load_data_config(yamls["coco"])
    assert coco.names == ["dog", "raccoon"] and coco.category_ids == [3, 7]
    ds = YoloDataset(coco, "val", img_size=320)
    assert sorted(ds.image_ids) == list(range(100, 100 + len(raccoon_truth)))
    assert load_data_config(yamls["voc"]).category_ids is None


def make_damaged(root: Path, truth: dict) -> tuple[Path, set[str], int]:
    """A YOLO copy of the raccoon images with a catalogue of damage; returns the YAML, the files
    that must be named as problems, and the number of usable images."""
    yml = make_yolo(root, truth)
    img_dir, lab_dir = root / "images" / "train", root / "labels" / "train"
    for split in ("val",):
        shutil.rmtree(root / "images" / split)
        shutil.rmtree(root / "labels" / split)
    yml.write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "names": ["raccoon"]}))
    src = RACCOON / "images" / "raccoon-61.jpg"
    good_label = "0 0.5 0.5 0.3 0.4\n"
    bad = set()

    def add(name: str, label: str | None, image: bytes | None = None) -> None:
        (img_dir / name).write_bytes(image if image is not None else src.read_bytes())
        if label is not None:
            (lab_dir / name).with_suffix(".txt").write_text(label)

    data = src.read_bytes()
    add("truncated.jpg", good_label, data[: len(data) // 2]); bad.add(str(img_dir / "truncated.jpg"))
    add("textfile.jpg", good_label, b"this is not an image\n"); bad.add(str(img_dir / "textfile.jpg"))
    (img_dir / "readme.txt").write_text("a stray text file"); bad.add(str(img_dir / "readme.txt"))
    for name, label in [("class_range", "0 0.5 0.5 0.2 0.2\n3 0.5 0.5 0.2 0.2\n"),
                        ("malformed", "0 0.5 0.5 0.2\n"), ("negative", "0 0.5 0.5 -0.2 0.3\n"),
                        ("notnumber", "0 0.5 abc 0.2 0.3\n"), ("nonfinite", "0 0.5 0.5 nan 0.3\n"),
                        ("outside", "0 1.5 0.5 0.2 0.3\n")]:
        add(name + ".jpg", label); bad.add(str(lab_dir / (name + ".txt")))
    usable = len(truth)
    grey = cv2.cvtColor(cv2.imread(str(src)), cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(img_dir / "grey.png"), grey); (lab_dir / "grey.txt").write_text(good_label)
    rgba = cv2.cvtColor(cv2.imread(str(src)), cv2.COLOR_BGR2BGRA)
    cv2.imwrite(str(img_dir / "rgba.png"), rgba); (lab_dir / "rgba.txt").write_text(good_label)
    cv2.imwrite(str(img_dir / "deep16.png"), grey.astype(np.uint16) * 257); (lab_dir / "deep16.txt").write_text(good_label)
    add("duplicate.jpg", good_label * 2)
    add("clipped.jpg", "0 0.95 0.5 0.2 0.3\n")
    add("background.jpg", None)
    usable += 6
    return yml, bad, usable


def test_damaged_copy_reports_each_bad_file(tmp_path, raccoon_truth):
    yml, bad, usable = make_damaged(tmp_path, raccoon_truth)
    loader, ds = create_dataloader(yml, "train", 160, 4, augment=True)
    assert len(ds) == usable
    assert {p["file"] for p in ds.problems} == bad
    assert all(p["problem"] for p in ds.problems)
    reasons = {Path(p["file"]).stem: p["problem"] for p in ds.problems}
    assert "truncated" in reasons["truncated"] and "out of range" in reasons["class_range"]
    assert "expected 5 values" in reasons["malformed"] and "non-positive" in reasons["negative"]
    assert "outside" in reasons["outside"]
    notes = {Path(p["file"]).stem: p["problem"] for p in ds.notes}
    assert "duplicate" in notes["duplicate"] and "clipped" in notes["clipped"]
    by_name = {Path(f).name: lab for f, lab in zip(ds.image_files, ds.labels)}
    assert len(by_name["duplicate.jpg"]) == 1 and len(by_name["background.jpg"]) == 0
    assert by_name["clipped.jpg"][0, 1] + by_name["clipped.jpg"][0, 3] / 2 == pytest.approx(1.0, abs=1e-6)
    for name in ("grey.png", "rgba.png", "deep16.png"):
        assert name in by_name
    seen = 0
    for imgs, targets, paths, _ in loader:
        assert imgs.shape[1:] == (3, 160, 160)
        seen += len(paths)
    assert seen == usable


def test_cli_data_json_names_problems_and_preview(tmp_path, raccoon_truth, capsys):
    yml, bad, usable = make_damaged(tmp_path, raccoon_truth)
    preview = tmp_path / "out" / "preview.png"
    assert cli.main(["data", str(yml), "--json", "--preview", str(preview), "--img", "320"]) == 0
    report = json.loads(capsys.readouterr().out)
    train = report["train"]
    assert train["images"] == usable and train["backgrounds"] == 1
    assert {p["file"] for p in train["problems"]} == bad
    assert train["boxes"] == sum(len(b) for b in raccoon_truth.values()) + 5
    assert train["classes"] == {"raccoon": train["boxes"]}
    assert 0 <= train["anchors"]["bpr"] <= 1 and train["anchors"]["model"] == "yolov4-csp"
    picture = cv2.imread(str(preview))
    assert picture is not None and picture.shape[1] >= 512
    assert cli.main(["data", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_data_config_errors(tmp_path):
    (tmp_path / "images").mkdir()
    cases = {
        "bad.yaml": "train: [unclosed\n",
        "list.yaml": "- a\n- b\n",
        "nonames.yaml": "train: images\n",
        "missing.yaml": "train: nowhere\nnames: [a]\n",
        "nosplit.yaml": "names: [a]\n",
        "gaps.yaml": "train: images\nnames: {0: a, 2: b}\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(UserError) as err:
            load_data_config(tmp_path / name)
        assert err.value.path == str(tmp_path / name)
    with pytest.raises(UserError, match="not found"):
        load_data_config(tmp_path / "absent.yaml")
    (tmp_path / "ok.yaml").write_text("train: images\nnames: {1: b, 0: a}\n")
    assert load_data_config(tmp_path / "ok.yaml").names == ["a", "b"]


# ----------------------------------------------------------------------------- cache


def test_check_cache_reused_and_invalidated(tmp_path, monkeypatch):
    yml = make_synthetic_dataset(tmp_path / "s", n_train=6, n_val=2, img_size=96, seed=1)
    cfg = load_data_config(yml)
    first = checks.scan_split(cfg, "train")
    assert first.cache_file == str(tmp_path / "s" / "labels" / "train.cache")

    def no_decode(*args, **kwargs):
        raise AssertionError("a cached split must not decode images again")

    monkeypatch.setattr(checks, "decode_image", no_decode)
    again = checks.scan_split(cfg, "train")
    assert again.image_files == first.image_files
    assert all(np.array_equal(a, b) for a, b in zip(again.labels, first.labels))
    monkeypatch.undo()
    label = tmp_path / "s" / "labels" / "train" / "train_00000.txt"
    label.write_text("0 0.5 0.5 0.25 0.25\n1 0.2 0.2 0.1 0.1\n3 0.7 0.7 0.1 0.1\n")
    changed = checks.scan_split(cfg, "train")
    idx = changed.image_files.index(str(tmp_path / "s" / "images" / "train" / "train_00000.jpg"))
    assert changed.labels[idx][:, 0].tolist() == [0, 1, 3]


def test_cache_falls_back_when_label_folder_is_read_only(tmp_path, monkeypatch):
    yml = make_synthetic_dataset(tmp_path / "s", n_train=4, n_val=2, img_size=96)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    labels = tmp_path / "s" / "labels"
    labels.chmod(0o555)
    try:
        data = checks.scan_split(load_data_config(yml), "train")
    finally:
        labels.chmod(0o755)
    assert not (labels / "train.cache").exists()
    assert data.cache_file is not None and Path(data.cache_file).parent == tmp_path / "home-cache" / "scaledyolo"


# ----------------------------------------------------------------------------- augmentation


def _coloured_boxes_image(rng: np.random.Generator, h: int, w: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Grey noise with n filled rectangles, each a pure colour; labels [cls=colour index, x1, y1, x2, y2]."""
    img = rng.integers(100, 130, (h, w, 3), dtype=np.uint8)
    labels = []
    for k in range(n):
        bw, bh = rng.integers(w // 6, w // 3), rng.integers(h // 6, h // 3)
        x1, y1 = rng.integers(0, w - bw), rng.integers(0, h - bh)
        img[y1:y1 + bh, x1:x1 + bw] = PURE[k]
        labels.append([k, x1, y1, x1 + bw, y1 + bh])
    return img, np.array(labels, dtype=np.float64)


PURE = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


def _mask(img: np.ndarray, k: int) -> np.ndarray:
    return (np.abs(img.astype(np.int16) - np.array(PURE[k])) < 40).all(2)


def _assert_boxes_on_objects(img: np.ndarray, labels: np.ndarray, tight: bool, cover: bool = True) -> None:
    """cover: all pixels of a box's colour lie in the box (one object per colour), and with `tight`
    (no rotation) the box is their bounding box to within 1.5 px; tight alone: the box's interior
    is filled by its object."""
    for cls, x1, y1, x2, y2 in labels:
        mask = _mask(img, int(cls))
        if cover:
            ys, xs = np.nonzero(mask)
            inside = (xs >= x1 - 1) & (xs <= x2) & (ys >= y1 - 1) & (ys <= y2)
            assert inside.mean() > 0.995, "object pixels outside their box"
            if tight:
                extent = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
                np.testing.assert_allclose(extent, [x1, y1, x2, y2], atol=1.5, err_msg="box not on its object")
        if tight:
            inner = mask[int(np.ceil(y1 + 1)):int(np.floor(y2 - 1)), int(np.ceil(x1 + 1)):int(np.floor(x2 - 1))]
            assert inner.size == 0 or inner.mean() > 0.9, "box not filled by its object"


@pytest.mark.parametrize("degrees,shear", [(0.0, 0.0), (30.0, 5.0)])
def test_random_perspective_keeps_boxes_on_objects(degrees, shear):
    for seed in range(8):
        rng = np.random.default_rng(seed)
        img, labels = _coloured_boxes_image(rng, 200, 260, 3)
        # Non-overlapping colours by construction only when boxes don't overlap: keep the last painted on top.
        labels = labels[[k for k in range(3) if _mask(img, k).sum() == (labels[k, 3] - labels[k, 1]) * (labels[k, 4] - labels[k, 2])]]
        out, new = aug.random_perspective(img, labels, rng, degrees=degrees, translate=0.2, scale=0.5, shear=shear,
                                          perspective=0.0)
        assert out.shape == img.shape
        _assert_boxes_on_objects(out, new, tight=degrees == 0 and shear == 0)


def test_letterbox_maps_boxes_and_shapes():
    rng = np.random.default_rng(0)
    img, labels = _coloured_boxes_image(rng, 150, 300, 1)
    out, (rw, rh), (padw, padh) = aug.letterbox(img, (320, 320))
    assert out.shape == (320, 320, 3)
    box = labels[:, 1:] * [rw, rh, rw, rh] + [padw, padh, padw, padh]
    _assert_boxes_on_objects(out, np.concatenate((labels[:, :1], box), 1), tight=True)
    assert (out[: int(padh)] == 114).all()
    auto, _, pad = aug.letterbox(img, 320, auto=True, stride=32)
    assert auto.shape[0] % 32 == 0 and auto.shape[1] == 320 and auto.shape[0] < 320
    small, ratio, _ = aug.letterbox(img, 640, scaleup=False)
    assert ratio == (1.0, 1.0) and small.shape == (640, 640, 3)


def _rect_dataset(root: Path, n: int = 8) -> Path:
    rng = np.random.default_rng(3)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            h, w = (120, 200) if i % 2 else (180, 140)
            img, labels = _coloured_boxes_image(rng, h, w, 1)
            cv2.imwrite(str(root / "images" / split / f"{i}.png"), img[:, :, ::-1])  # PURE colours are RGB
            x1, y1, x2, y2 = labels[0, 1:]
            (root / "labels" / split / f"{i}.txt").write_text(
                f"0 {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}\n")
    return _write_yaml(root / "d.yaml", {"path": str(root), "train": "images/train", "val": "images/val",
                                         "names": ["a", "b", "c", "d"]})


def test_train_batches_keep_boxes_on_objects_through_mosaic_and_flips(tmp_path):
    yml = _rect_dataset(tmp_path)
    hyp = {"hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0, "degrees": 0.0, "shear": 0.0, "flipud": 0.5, "fliplr": 0.5}
    loader, ds = create_dataloader(yml, "train", 160, 4, hyp=hyp, augment=True, shuffle=True, seed=1)
    boxes_seen = 0
    for _ in range(2):
        for imgs, targets, paths, shapes in loader:
            assert imgs.dtype == torch.uint8 and imgs.shape[1:] == (3, 160, 160)
            for i in range(len(imgs)):
                t = targets[targets[:, 0] == i, 1:].numpy()
                pix = aug.normalized_to_pixels(t, 160, 160)
                _assert_boxes_on_objects(imgs[i].permute(1, 2, 0).numpy(), pix, tight=True, cover=False)
                boxes_seen += len(t)
    assert boxes_seen > 8


def test_val_rect_batches_and_shapes_map_back(tmp_path):
    yml = _rect_dataset(tmp_path)
    loader, ds = create_dataloader(yml, "val", 160, 4, rect=True)
    ars = ds.shapes[:, 0] / ds.shapes[:, 1]
    assert (np.diff(ars) >= 0).all()
    n = 0
    for b, (imgs, targets, paths, shapes) in enumerate(loader):
        assert imgs.shape[2] % 32 == 0 and imgs.shape[3] % 32 == 0
        assert tuple(imgs.shape[2:]) == tuple(ds.batch_shapes[b])
        assert max(imgs.shape[2:]) <= 160 + 32
        for i, (path, ((h0, w0), ((rh, rw), (padw, padh)))) in enumerate(zip(paths, shapes)):
            k = ds.image_files.index(path)
            assert (h0, w0) == tuple(ds.shapes[k])
            orig = aug.normalized_to_pixels(ds.labels[k], w0, h0)[:, 1:]
            got = aug.normalized_to_pixels(targets[targets[:, 0] == i, 1:].numpy(), imgs.shape[3], imgs.shape[2])[:, 1:]
            np.testing.assert_allclose(got, orig * [rw, rh, rw, rh] + [padw, padh, padw, padh], atol=1e-3)
            _assert_boxes_on_objects(imgs[i].permute(1, 2, 0).numpy(), np.concatenate(([[0]], got), 1), tight=True)
            n += 1
    assert n == len(ds)


def test_loader_is_reproducible_and_workers_do_not_change_batches(tmp_path):
    yml = make_synthetic_dataset(tmp_path / "s", n_train=8, n_val=2, img_size=96)

    def first_batches(seed: int, workers: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        loader, _ = create_dataloader(yml, "train", 96, 4, augment=True, shuffle=True, seed=seed, workers=workers)
        return [(imgs, targets) for imgs, targets, _, _ in loader]

    a, b, c = first_batches(0, 0), first_batches(0, 2), first_batches(1, 0)
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0])
    loader, _ = create_dataloader(yml, "train", 96, 4, augment=True, shuffle=True, seed=0)
    epoch0 = next(iter(loader))[0]
    epoch1 = next(iter(loader))[0]
    assert not torch.equal(epoch0, epoch1), "each epoch must draw new augmentation"
    loader.sampler.set_epoch(0)
    assert torch.equal(next(iter(loader))[0], epoch0)


def test_collate_pads_mixed_shapes_and_renormalises():
    a = (torch.zeros(3, 64, 96, dtype=torch.uint8), torch.tensor([[0, 1, 0.5, 0.5, 0.5, 0.5]]), "a", None)
    b = (torch.zeros(3, 96, 96, dtype=torch.uint8), torch.tensor([[0, 2, 0.5, 0.5, 0.2, 0.2]]), "b", None)
    from scaledyolo.data.loader import collate

    imgs, targets, paths, shapes = collate([a, b])
    assert imgs.shape == (2, 3, 96, 96) and paths == ["a", "b"]
    assert targets[:, 0].tolist() == [0, 1]
    assert targets[0, 2:].tolist() == pytest.approx([0.5, 0.5 * 64 / 96, 0.5, 0.5 * 64 / 96])
    assert (imgs[0, :, 64:] == 114).all()


def test_distributed_sampler_under_ddp(tmp_path):
    import torch.distributed as dist

    yml = make_synthetic_dataset(tmp_path / "s", n_train=5, n_val=2, img_size=64)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        loader, ds = create_dataloader(yml, "train", 64, 2, augment=True, shuffle=True)
        assert loader.sampler.base is not None
        assert sum(len(p) for _, _, p, _ in loader) == len(ds)
    finally:
        dist.destroy_process_group()


def test_ram_cache_gives_identical_batches(tmp_path):
    yml = make_synthetic_dataset(tmp_path / "s", n_train=4, n_val=2, img_size=96)
    plain = next(iter(create_dataloader(yml, "train", 96, 4, augment=True, seed=2)[0]))
    cached_loader, ds = create_dataloader(yml, "train", 96, 4, augment=True, seed=2, cache=True)
    assert all(r is not None for r in ds.ram)
    cached = next(iter(cached_loader))
    assert torch.equal(plain[0], cached[0]) and torch.equal(plain[1], cached[1])


# ----------------------------------------------------------------------------- anchors, synthetic


def test_check_anchors_replaces_bad_anchors_and_keeps_good_ones(tmp_path):
    import scaledyolo

    yml = make_synthetic_dataset(tmp_path / "s", n_train=24, n_val=2, img_size=128)
    ds = YoloDataset(yml, "train", img_size=128)
    model = scaledyolo.build_model("yolov4-tiny", num_classes=4)
    bad = [[1.0, 1.0, 1.5, 1.5, 2.0, 2.0], [2.5, 2.5, 3.0, 3.0, 3.5, 3.5]]
    model.spec.anchors = bad
    model.detect.anchors.copy_(torch.tensor(bad).view(2, 3, 2))
    report = check_anchors(ds, model, thr=4.0, img_size=128, gen=200)
    assert report["bpr"] < 0.98 and report["updated"] and report["new_bpr"] > report["bpr"]
    new = model.detect.anchors.view(-1, 2)
    assert torch.allclose(new, torch.tensor(model.spec.anchors).view(-1, 2))
    assert (new.prod(1).diff() >= 0).all(), "anchors sorted small to large"
    wh = label_wh(ds.shapes, ds.labels, 128)
    assert anchor_fit(wh, new.numpy(), 4.0)[0] >= 0.98
    before = model.detect.anchors.clone()
    assert not check_anchors(ds, model, img_size=128, gen=50)["updated"]
    assert torch.equal(before, model.detect.anchors)


def test_synthetic_dataset_is_deterministic_and_sized(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", n_train=6, n_val=3, img_size=128, seed=5)
    b = make_synthetic_dataset(tmp_path / "b", n_train=6, n_val=3, img_size=128, seed=5)
    cfg = load_data_config(a)
    assert cfg.names == NAMES
    la = sorted((tmp_path / "a" / "labels" / "train").glob("*.txt"))
    assert len(la) == 6 and len(list((tmp_path / "a" / "images" / "val").glob("*.jpg"))) == 3
    for f in la:
        assert f.read_text() == (tmp_path / "b" / "labels" / "train" / f.name).read_text()
    assert b.read_text() == a.read_text() and oct(b.stat().st_mode & 0o777) == oct(0o644)
    ds = YoloDataset(cfg, "train", img_size=128)
    assert not ds.problems and all(len(lab) >= 1 for lab in ds.labels)
    sides = np.concatenate([np.maximum(lab[:, 3] * w, lab[:, 4] * h) / min(h, w) for lab, (h, w) in zip(ds.labels, ds.shapes)])
    assert sides.min() >= 0.04 and sides.max() <= 0.41


def test_txt_list_split_and_missing_listed_files(tmp_path, raccoon_truth):
    make_yolo(tmp_path, raccoon_truth)
    names = sorted(raccoon_truth)
    (tmp_path / "train.txt").write_text("".join(f"./images/train/{n}\n" for n in names[:4]) + "images/train/gone.jpg\n")
    (tmp_path / "list.yaml").write_text(yaml.safe_dump({"train": "train.txt", "val": ["images/val"],
                                                        "names": ["raccoon"]}))
    cfg = load_data_config(tmp_path / "list.yaml")
    assert cfg.path == tmp_path.resolve() and cfg.splits["train"].kind == "list"
    ds = YoloDataset(cfg, "train", img_size=160)
    assert sorted(Path(f).name for f in ds.image_files) == names[:4]
    assert [Path(p["file"]).name for p in ds.problems] == ["gone.jpg"]
    assert sum(len(lab) for lab in ds.labels) == sum(len(raccoon_truth[n]) for n in names[:4])
    assert len(YoloDataset(cfg, "val", img_size=160)) == len(names)
    assert checks.scan_split(cfg, "train").cache_file == str(tmp_path / "train.cache")


def test_txt_list_with_bom_or_bad_bytes(tmp_path, raccoon_truth):
    make_yolo(tmp_path, raccoon_truth)
    names = sorted(raccoon_truth)[:2]
    (tmp_path / "train.txt").write_text("".join(f"images/train/{n}\n" for n in names), encoding="utf-8-sig")
    (tmp_path / "list.yaml").write_text(yaml.safe_dump({"train": "train.txt", "names": ["raccoon"]}))
    ds = YoloDataset(load_data_config(tmp_path / "list.yaml"), "train", img_size=160)
    assert sorted(Path(f).name for f in ds.image_files) == names and not ds.problems
    (tmp_path / "train.txt").write_bytes(b"images/train/\xff\xfe.jpg\n")
    with pytest.raises(UserError) as err:
        checks.scan_split(load_data_config(tmp_path / "list.yaml"), "train")
    assert Path(err.value.path).resolve() == (tmp_path / "train.txt").resolve()


def test_coco_damage_is_reported_per_image(tmp_path, raccoon_truth):
    yml = make_coco(tmp_path, raccoon_truth)
    data = json.loads((tmp_path / "ann.json").read_text())
    first, second = data["images"][0], data["images"][1]
    data["annotations"].append({"id": 500, "image_id": first["id"], "category_id": 42, "bbox": [1, 1, 5, 5]})
    data["annotations"].append({"id": 501, "image_id": second["id"], "category_id": 7, "bbox": [10, 10, -4, 5]})
    data["images"].append({"id": 900, "file_name": "absent.jpg", "width": 10, "height": 10})
    (tmp_path / "ann.json").write_text(json.dumps(data))
    ds = YoloDataset(load_data_config(yml), "train", img_size=160)
    assert len(ds) == len(raccoon_truth) - 2
    reasons = {Path(p["file"]).name: p["problem"] for p in ds.problems}
    assert set(reasons) == {first["file_name"], second["file_name"], "absent.jpg"}
    assert "category_id 42" in reasons[first["file_name"]] and "non-positive" in reasons[second["file_name"]]


def test_exif_orientation_is_honoured(tmp_path):
    from PIL import Image

    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :10] = 255  # the stored image's left columns: the top rows once rotated 90 degrees clockwise
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = 6
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    im.save(tmp_path / "images" / "r.jpg", exif=exif, quality=100)
    (tmp_path / "labels" / "r.txt").write_text("0 0.5 0.125 1.0 0.25\n")
    yml = _write_yaml(tmp_path / "d.yaml", {"train": "images", "names": ["top"]})
    ds = YoloDataset(yml, "train", img_size=64)
    assert tuple(ds.shapes[0]) == (40, 20)
    img, targets, _, _ = ds[0]
    x1, y1, x2, y2 = aug.normalized_to_pixels(targets[:, 1:].numpy(), 64, 64)[0, 1:]
    grey = img.numpy().mean(0)
    assert grey[int(y1) + 1:int(y2) - 1, int(x1) + 1:int(x2) - 1].min() > 200
    assert grey[int(y2) + 2:, int(x1) + 1:int(x2) - 1].max() < 60


def test_image_damaged_after_the_check_is_replaced_not_fatal(tmp_path, caplog):
    yml = make_synthetic_dataset(tmp_path / "s", n_train=4, n_val=2, img_size=64)
    loader, ds = create_dataloader(yml, "train", 64, 2, augment=False)
    Path(ds.image_files[1]).write_bytes(b"gone bad")
    with caplog.at_level("WARNING", logger="scaledyolo.data"):
        paths = [p for _, _, batch_paths, _ in loader for p in batch_paths]
    assert len(paths) == 4 and paths.count(ds.image_files[1]) == 0
    assert any(ds.image_files[1] in r.getMessage() for r in caplog.records)


def test_jpeg_missing_only_its_end_marker_is_used_and_reported(tmp_path, caplog):
    """A real photo without its final FFD9 decodes exactly and counts; one cut inside its scan does not."""
    from scaledyolo.data.image_decode import MISSING_END_NOTE, ImageError, decode_image

    make_voc(tmp_path / "voc")
    yml = tmp_path / "voc" / "voc.yaml"
    no_end, cut = tmp_path / "voc" / "images" / "raccoon-61.jpg", tmp_path / "voc" / "images" / "raccoon-150.jpg"
    data = no_end.read_bytes()
    assert data[-2:] == b"\xff\xd9"
    no_end.write_bytes(data[:-2])
    notes: list[str] = []
    assert np.array_equal(decode_image(no_end, check=True, notes=notes), cv2.imdecode(np.frombuffer(data, np.uint8), 1))
    assert notes == [MISSING_END_NOTE] and no_end.read_bytes() == data[:-2]  # used in memory, never rewritten
    with caplog.at_level("WARNING", logger="scaledyolo"):
        ds = YoloDataset(yml, "train")
    assert len(ds) == 6 and not ds.problems  # the full count
    assert [w["file"] for w in ds.warned] == [str(no_end)]
    assert any(str(no_end) in r.getMessage() and "end-of-image" in r.getMessage() for r in caplog.records)
    img, (h0, w0), _ = ds.load_image(ds.image_files.index(str(no_end)))  # the training loader reads it too
    assert (h0, w0) == cv2.imdecode(np.frombuffer(data, np.uint8), 1).shape[:2]

    scan = cut.read_bytes()
    cut.write_bytes(scan[: (scan.index(b"\xff\xda") + len(scan)) // 2])  # rows after the cut are missing
    with pytest.raises(ImageError, match="truncated JPEG"):
        decode_image(cut, check=True)
    ds = YoloDataset(yml, "train")
    assert len(ds) == 5 and [p["file"] for p in ds.problems] == [str(cut)]
    assert "last rows are missing" in ds.problems[0]["problem"]


def test_jpeg_with_trailing_data_is_complete_and_truncated_jpeg_is_not(tmp_path):
    from scaledyolo.data.image_decode import ImageError, decode_image

    ok, buf = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8))
    data = buf.tobytes()
    trailer = tmp_path / "motion-photo.jpg"
    trailer.write_bytes(data + b"\x00" * 5000)  # data appended after the image, as phones do
    assert decode_image(trailer, check=True).shape == (64, 96, 3)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) * 2 // 3] + b"\x00" * 2000)
    with pytest.raises(ImageError, match="truncated JPEG"):
        decode_image(cut, check=True)
