"""Property-based tests of the data path: label parsing and checking, letterbox and warp box
transforms, and garbage images/labels fed through the loader (never a crash, always reported)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from scaledyolo.data import augment as aug
from scaledyolo.data import formats
from scaledyolo.data.label_checks import validate_labels
from scaledyolo.data.dataset import load_data_config
from scaledyolo.data.loader import create_dataloader
from scaledyolo.errors import UserError

RACCOON_JPG = Path(__file__).parent / "fixtures" / "raccoon" / "images" / "raccoon-150.jpg"
FAST = settings(max_examples=60, deadline=None)

finite = st.floats(min_value=-10, max_value=10, allow_nan=False, allow_infinity=False)
anyfloat = st.floats(allow_nan=True, allow_infinity=True, width=32)


@FAST
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_parser_returns_rows_or_a_label_error(text):
    try:
        rows = formats.parse_yolo_labels(text)
    except formats.LabelError as exc:
        assert str(exc).startswith("line ")
        return
    assert rows.ndim == 2 and rows.shape[1] == 5
    assert (rows[:, 0] >= 0).all() and (rows[:, 0] == np.round(rows[:, 0])).all()


@FAST
@given(st.lists(st.tuples(st.integers(0, 999), finite, finite, finite, finite), max_size=20),
       st.sampled_from(["\n", "\r\n"]), st.sampled_from([" ", "\t", "  "]))
def test_parser_round_trips_well_formed_files(rows, newline, sep):
    text = newline.join(sep.join([str(c)] + [repr(v) for v in box]) for c, *box in rows) + newline
    parsed = formats.parse_yolo_labels(text)
    assert parsed.shape == (len(rows), 5)
    if rows:
        np.testing.assert_array_equal(parsed, np.array(rows, dtype=np.float64))


VOC = (b'<annotation><object><name>a</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>30</xmax><ymax>40</ymax>'
       b'</bndbox></object></annotation>')


@FAST
@given(st.binary(max_size=200), st.integers(0, len(VOC)))
def test_voc_parser_returns_boxes_or_a_label_error(noise, at):
    declared = b'<?xml version="1.0" encoding="' + noise[:12].replace(b'"', b"") + b'"?>' + VOC
    for data in (noise, VOC[:at] + noise + VOC[at:], declared):
        try:
            classes, boxes = formats.parse_voc(data, ["a"])
        except formats.LabelError:
            continue
        assert boxes.shape == (len(classes), 4) and (classes == 0).all()


voc_objects = st.lists(st.tuples(st.sampled_from(["a", "b", "c d"]), st.integers(0, 5000), st.integers(0, 5000),
                                  st.integers(1, 900), st.integers(1, 900)), max_size=6)


@FAST
@given(voc_objects, st.sampled_from(["utf-8", "latin-1"]))
def test_voc_parser_reads_valid_files_exactly(objects, encoding):
    """The good path: every object of a well-formed annotation comes back, in order, with its box."""
    body = "".join(f"<object><name> {n} </name><pose>Unspecified</pose><bndbox><xmin>{x}</xmin><ymin>{y}</ymin>"
                   f"<xmax>{x + w}.5</xmax><ymax>{y + h}</ymax></bndbox></object>" for n, x, y, w, h in objects)
    xml = f'<?xml version="1.0" encoding="{encoding}"?><annotation><filename>ä.jpg</filename>{body}</annotation>'
    classes, boxes = formats.parse_voc(xml.encode(encoding), ["a", "b", "c d"])
    assert classes.tolist() == [["a", "b", "c d"].index(n) for n, *_ in objects]
    np.testing.assert_array_equal(boxes, np.array([[x, y, x + w + 0.5, y + h] for _, x, y, w, h in objects],
                                                  dtype=np.float64).reshape(-1, 4))


json_values = st.recursive(st.none() | st.booleans() | st.integers(-3, 3) | st.floats(-5, 50) | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
                           max_leaves=12)
coco_ann = st.fixed_dictionaries({"id": st.integers(0, 9), "image_id": st.one_of(st.integers(0, 3), json_values),
                                  "category_id": st.one_of(st.integers(0, 3), json_values),
                                  "bbox": st.one_of(st.lists(st.floats(-5, 50), min_size=4, max_size=4), json_values)})
coco_doc = st.one_of(json_values, st.fixed_dictionaries({
    "images": st.one_of(st.lists(st.fixed_dictionaries({"id": st.integers(0, 3), "file_name": st.just("a.jpg")}),
                                 max_size=3), json_values),
    "annotations": st.one_of(st.lists(coco_ann, max_size=5), json_values),
    "categories": st.one_of(st.lists(st.fixed_dictionaries({"id": st.integers(0, 3), "name": st.text(max_size=4)}),
                                     max_size=3), json_values)}))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(coco_doc)
def test_coco_reader_returns_samples_or_a_user_error(tmp_path, doc):
    f = tmp_path / "ann.json"
    f.write_text(json.dumps(doc))
    try:
        split = formats.read_coco(tmp_path, f)
    except UserError as exc:
        assert exc.path == str(f)
        return
    assert len(split.names) == len(split.category_ids)
    for sample in split.samples:
        assert sample.problem or (len(sample.classes) == len(sample.boxes)
                                  and ((sample.classes >= 0) & (sample.classes < len(split.names))).all())


coco_valid = st.tuples(
    st.lists(st.integers(1, 90), min_size=1, max_size=4, unique=True),  # category ids, any order
    st.lists(st.integers(0, 10**6), min_size=1, max_size=4, unique=True),  # image ids
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.floats(0, 500), st.floats(0, 500), st.floats(0.5, 300),
                       st.floats(0.5, 300), st.booleans()), max_size=8))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(coco_valid)
def test_coco_reader_reads_valid_files_exactly(tmp_path, case):
    """The good path: names sorted by category id, contiguous classes, xywh -> xyxy, crowds left out."""
    cat_ids, image_ids, anns = case
    doc = {"images": [{"id": i, "file_name": f"{i}.jpg", "width": 640, "height": 480} for i in image_ids],
           "categories": [{"id": c, "name": f"n{c}"} for c in cat_ids], "annotations": []}
    for k, (img, cat, x, y, w, h, crowd) in enumerate(anns):
        doc["annotations"].append({"id": k, "image_id": image_ids[img % len(image_ids)],
                                   "category_id": cat_ids[cat % len(cat_ids)], "bbox": [x, y, w, h],
                                   "iscrowd": int(crowd), "area": w * h})
    f = tmp_path / "ann.json"
    f.write_text(json.dumps(doc))
    split = formats.read_coco(tmp_path, f)
    order = sorted(cat_ids)
    assert split.category_ids == order and split.names == [f"n{c}" for c in order]
    assert [s.image_id for s in split.samples] == image_ids
    for sample in split.samples:
        assert sample.problem is None and sample.image == tmp_path / f"{sample.image_id}.jpg"
        mine = [a for a in doc["annotations"] if a["image_id"] == sample.image_id and not a["iscrowd"]]
        assert sample.classes.tolist() == [order.index(a["category_id"]) for a in mine]
        want = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in mine)]
        np.testing.assert_array_equal(sample.boxes, np.array(want, dtype=np.float64).reshape(-1, 4))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(alphabet="abcdefgh xyz_-", min_size=1, max_size=8), min_size=1, max_size=5),
       st.booleans(), st.sampled_from([["train"], ["val"], ["train", "val"], ["train", "val", "test"]]),
       st.booleans())
def test_data_yaml_reads_valid_files_exactly(tmp_path, names, as_mapping, splits, relative):
    """The good path: names (list or {id: name}) and every split given come back, resolved under path."""
    root = tmp_path / "data"
    for s in splits:
        (root / "images" / s).mkdir(parents=True, exist_ok=True)
    doc = {"path": "data" if relative else str(root),
           "names": {i: n for i, n in enumerate(names)} if as_mapping else names}
    doc.update({s: f"images/{s}" for s in splits})
    f = tmp_path / "d.yaml"
    f.write_text(yaml.safe_dump(doc))
    cfg = load_data_config(f)
    assert cfg.names == names and cfg.nc == len(names) and cfg.path == root.resolve()
    assert sorted(cfg.splits) == sorted(splits)
    for s in splits:
        assert cfg.splits[s].kind == "folder" and cfg.splits[s].sources == [(root / "images" / s).resolve()]


yaml_value = st.one_of(json_values, st.sampled_from(["images", "labels", "x.txt", "nowhere", ".", "ann.json"]),
                       st.fixed_dictionaries({"images": st.sampled_from(["images", "nowhere", "x.txt"]),
                                              "annotations": st.sampled_from(["labels", "ann.json", "x.txt"])}))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(json_values, st.dictionaries(st.sampled_from(["path", "train", "val", "test", "names", "nc"]),
                                              yaml_value, max_size=6)))
def test_data_yaml_loads_or_gives_a_user_error(tmp_path, doc):
    for d in ("images", "labels"):
        (tmp_path / d).mkdir(exist_ok=True)
    (tmp_path / "x.txt").write_text("images/none.jpg\n")
    (tmp_path / "ann.json").write_text(json.dumps({"images": [], "categories": [{"id": 1, "name": "a"}]}))
    f = tmp_path / "d.yaml"
    f.write_text(yaml.safe_dump(doc))
    try:
        cfg = load_data_config(f)
    except UserError as exc:
        assert exc.path == str(f)
        return
    assert cfg.names and all(isinstance(n, str) for n in cfg.names) and cfg.splits


@FAST
@given(st.integers(1, 5), st.lists(st.tuples(st.integers(-2, 7), anyfloat, anyfloat, anyfloat, anyfloat), max_size=8),
       st.booleans(), st.integers(1, 2000), st.integers(1, 2000))
def test_checked_labels_are_valid_or_refused(nc, rows, normalized, h, w):
    classes = np.array([r[0] for r in rows], dtype=np.int64)
    boxes = np.array([r[1:] for r in rows], dtype=np.float64).reshape(-1, 4)
    if not normalized:
        boxes = boxes * 300
    sample = formats.Sample(Path("x.jpg"), Path("x.txt"), classes, boxes, normalized)
    try:
        out, notes = validate_labels(sample, (h, w), nc)
    except formats.LabelError:
        return
    assert out.shape[1] == 5 and len(out) <= len(rows)
    assert np.isfinite(out).all()
    assert ((out[:, 0] >= 0) & (out[:, 0] < nc)).all()
    assert (out[:, 3:] > 0).all()
    x1, x2 = out[:, 1] - out[:, 3] / 2, out[:, 1] + out[:, 3] / 2
    y1, y2 = out[:, 2] - out[:, 4] / 2, out[:, 2] + out[:, 4] / 2
    eps = 1e-6
    assert (x1 >= -eps).all() and (x2 <= 1 + eps).all() and (y1 >= -eps).all() and (y2 <= 1 + eps).all()


@FAST
@given(st.integers(1, 400), st.integers(1, 400), st.integers(1, 12), st.integers(1, 12), st.booleans(), st.booleans())
def test_letterbox_shape_and_point_mapping(h, w, th, tw, auto, scaleup):
    th, tw = th * 32, tw * 32
    img = np.zeros((h, w, 3), np.uint8)
    img[h // 2:, w // 2:] = 255  # a bright quadrant: its corner must land where the mapping says
    out, (rw, rh), (padw, padh) = aug.letterbox(img, (th, tw), auto=auto, scaleup=scaleup)
    oh, ow = out.shape[:2]
    if auto:
        assert oh <= th and ow <= tw and (th - oh) % 32 == 0 and (tw - ow) % 32 == 0
    else:
        assert (oh, ow) == (th, tw)
    if not scaleup:
        assert rw <= 1 + 1e-9 and rh <= 1 + 1e-9
    assert padw >= 0 and padh >= 0
    assert padw + w * rw <= ow + 1e-6 and padh + h * rh <= oh + 1e-6
    assert abs(rw - rh) <= 1 / min(h, w) + 1 / max(1, min(round(h * rh), round(w * rw))) + 1e-6  # aspect kept
    if round(w * rw) >= 8 and round(h * rh) >= 8:
        # pixel centre a little inside the bright quadrant's top-left corner
        x = int(padw + (w // 2 + 1) * rw + 1)
        y = int(padh + (h // 2 + 1) * rh + 1)
        if x < padw + w * rw - 1 and y < padh + h * rh - 1:
            assert out[y, x].max() > 128


warp = st.fixed_dictionaries({
    "degrees": st.floats(0, 45), "translate": st.floats(0, 0.5), "scale": st.floats(0, 0.9),
    "shear": st.floats(0, 10), "perspective": st.sampled_from([0.0, 0.0, 0.0005]),
})
box_xyxy = st.tuples(st.floats(0, 300), st.floats(0, 200), st.floats(1, 200), st.floats(1, 150))


@FAST
@given(warp, st.lists(box_xyxy, min_size=1, max_size=6), st.integers(0, 2**31))
def test_random_perspective_boxes_stay_valid(params, boxes, seed):
    img = np.zeros((200, 300, 3), np.uint8)
    labels = np.array([[i % 3, x, y, min(x + bw, 300), min(y + bh, 200)] for i, (x, y, bw, bh) in enumerate(boxes)])
    assume((labels[:, 3] > labels[:, 1]).all() and (labels[:, 4] > labels[:, 2]).all())
    out, new = aug.random_perspective(img, labels, np.random.default_rng(seed), **params)
    assert out.shape == img.shape
    assert new.shape[1] == 5 and len(new) <= len(labels)
    assert set(new[:, 0].tolist()) <= set(labels[:, 0].tolist())
    assert np.isfinite(new).all()
    assert (new[:, 1] >= 0).all() and (new[:, 3] <= 300).all() and (new[:, 2] >= 0).all() and (new[:, 4] <= 200).all()
    assert ((new[:, 3] - new[:, 1]) > 2).all() and ((new[:, 4] - new[:, 2]) > 2).all()


@FAST
@given(st.floats(-0.5, 0.5), st.floats(-0.5, 0.5), st.lists(box_xyxy, min_size=1, max_size=6))
def test_pure_translation_moves_boxes_exactly(tx, ty, boxes):
    labels = np.array([[x, y, x + bw, y + bh] for x, y, bw, bh in boxes])
    m = np.eye(3)
    m[0, 2], m[1, 2] = tx * 300, ty * 200
    out = aug.transform_boxes(labels, m, (200, 300))
    want = labels + [tx * 300, ty * 200, tx * 300, ty * 200]
    want[:, [0, 2]] = want[:, [0, 2]].clip(0, 300)
    want[:, [1, 3]] = want[:, [1, 3]].clip(0, 200)
    np.testing.assert_allclose(out, want, atol=1e-9)


@FAST
@given(st.floats(-180, 180), st.floats(0.3, 2.0), st.lists(box_xyxy, min_size=1, max_size=6))
def test_rotated_box_encloses_rotated_corners(angle, zoom, boxes):
    labels = np.array([[x, y, x + bw, y + bh] for x, y, bw, bh in boxes])
    m = np.eye(3)
    m[:2, :2] = zoom * np.array([[math.cos(math.radians(angle)), -math.sin(math.radians(angle))],
                                 [math.sin(math.radians(angle)), math.cos(math.radians(angle))]])
    m[:2, 2] = [150, 100]
    big = (10_000, 10_000)  # no clipping: the box is exactly the hull of the four corners
    m[:2, 2] += 5000
    out = aug.transform_boxes(labels, m, big)
    for (x1, y1, x2, y2), (a1, b1, a2, b2) in zip(labels, out):
        corners = np.array([[x1, y1, 1], [x2, y1, 1], [x1, y2, 1], [x2, y2, 1]]) @ m.T
        assert corners[:, 0].min() == pytest.approx(a1) and corners[:, 0].max() == pytest.approx(a2)
        assert corners[:, 1].min() == pytest.approx(b1) and corners[:, 1].max() == pytest.approx(b2)


@FAST
@given(st.lists(st.tuples(st.floats(-5, 5), st.floats(-5, 5), st.floats(0.01, 3), st.floats(0.01, 3)),
                min_size=1, max_size=5), st.integers(0, 10))
def test_box_candidates_rule(boxes, seed):
    before = np.array([[x, y, x + w, y + h] for x, y, w, h in boxes]) * 100
    shrink = np.random.default_rng(seed).uniform(0.0, 1.0, (len(before), 1))
    after = before.copy()
    after[:, 2:] = before[:, :2] + (before[:, 2:] - before[:, :2]) * shrink
    keep = aug.box_candidates(before, after)
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    area_ratio = (w2 * h2) / ((before[:, 2] - before[:, 0]) * (before[:, 3] - before[:, 1]))
    ar = np.maximum(w2 / h2, h2 / w2)
    assert not keep[(w2 <= 2) | (h2 <= 2)].any()
    assert not keep[area_ratio < 0.2 - 1e-9].any()
    assert not keep[ar > 20 + 1e-9].any()
    assert keep[(w2 > 3) & (h2 > 3) & (area_ratio > 0.21) & (ar < 19)].all()


# ----------------------------------------------------------------------------- garbage through the loader


garbage_label = st.one_of(
    st.text(max_size=80),
    st.lists(st.tuples(st.integers(-1, 3), anyfloat, anyfloat, anyfloat, anyfloat), max_size=4).map(
        lambda rows: "\n".join(" ".join(str(v) for v in r) for r in rows)),
)


def _image_bytes(kind: str, cut: float, noise: bytes) -> bytes:
    data = RACCOON_JPG.read_bytes()
    if kind == "good":
        return data
    if kind == "truncated":
        return data[: max(1, int(len(data) * cut))]
    if kind == "corrupt":
        mid = len(data) // 2
        return data[:mid] + noise + data[mid + len(noise):]
    return noise  # random bytes


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["good", "truncated", "corrupt", "random"]), st.floats(0.01, 0.99),
                          st.binary(min_size=0, max_size=64), st.one_of(st.none(), garbage_label)),
                min_size=1, max_size=5))
def test_garbage_images_and_labels_never_crash_the_loader(tmp_path, files):
    root = tmp_path / "fuzz"
    shutil.rmtree(root, ignore_errors=True)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "images" / "anchor.jpg").write_bytes(RACCOON_JPG.read_bytes())  # one good image so the split is usable
    for i, (kind, cut, noise, label) in enumerate(files):
        (root / "images" / f"{i}.jpg").write_bytes(_image_bytes(kind, cut, noise))
        if label is not None:
            (root / "labels" / f"{i}.txt").write_text(label, encoding="utf-8")
    (root / "d.yaml").write_text(f"path: {root}\ntrain: images\nnames: [a, b]\n")
    loader, ds = create_dataloader(root / "d.yaml", "train", 64, 2, augment=True, shuffle=True)
    usable = set(ds.image_files)
    reported = {p["image"] for p in ds.problems}
    assert len(usable) + len(reported) == len(files) + 1, "every file is either usable or reported"
    assert not usable & reported
    seen = sum(len(paths) for _, _, paths, _ in loader)
    assert seen == len(ds)
