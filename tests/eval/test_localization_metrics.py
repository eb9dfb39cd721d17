"""Localization metrics and ground-truth loaders against hand-computed cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from avssl.eval.gt import (
    BoxAnnotation,
    GroundTruthError,
    box_to_pixels,
    boxes_map,
    find,
    flickr_gt_map,
    load_boxes,
    parse_flickr_xml,
    parse_vggss_json,
    synthetic_gt_map,
    vggss_gt_map,
)
from avssl.eval.localization import (
    auc,
    baseline_maps,
    binarization_params,
    binarize,
    center_prior,
    ciou,
    ciou_at,
    evaluate,
    evaluate_with_baselines,
    format_table,
    minmax_normalize,
    motion_map,
    success_curve,
)

# --- cIoU ----------------------------------------------------------------------------------------

GT = np.array([[0, 0, 0, 0],
               [0, 1, 1, 0],
               [0, 1, 0.5, 0],
               [0, 0, 0.5, 0]])
PRED = np.array([[1, 0, 0, 0],
                 [0, 1, 1, 0],
                 [0, 0, 1, 0],
                 [0, 0, 0, 0]], bool)


def test_ciou_hand_computed_with_half_weights():
    # overlap: 1 + 1 + 0.5 (a half-weight pixel) = 2.5; sum(gt) = 4; one predicted pixel where
    # gt == 0 (top-left); predicting the 0.5 pixel at (2, 2) is not a false positive.
    assert ciou(PRED, GT) == pytest.approx(2.5 / 5)
    # missing the half-weight pixel at (3, 2) costs 0.5 in the denominator only (through sum gt)
    only_full = (GT == 1)
    assert ciou(only_full, GT) == pytest.approx(3 / 4)
    assert ciou(GT > 0, GT) == pytest.approx(1.0)
    assert ciou(np.ones((4, 4)), GT) == pytest.approx(4 / (4 + 11))  # 11 pixels with gt == 0


def test_ciou_batch_torch_and_edge_cases():
    out = ciou(torch.from_numpy(np.stack([PRED, GT > 0])), np.stack([GT, GT]))
    assert out.shape == (2,) and out == pytest.approx([0.5, 1.0])
    assert ciou(np.zeros((3, 3)), np.ones((3, 3))) == 0.0
    assert np.isnan(ciou(np.zeros((3, 3)), np.zeros((3, 3))))  # no gt, no prediction
    with pytest.raises(ValueError, match="differ"):
        ciou(np.zeros((3, 3)), np.zeros((4, 4)))


def test_ciou_at_and_auc_hand_computed():
    ious = [0.0, 0.32, 0.52, 1.0]
    assert ciou_at(ious, 0.5) == 0.5
    assert ciou_at(ious, 0.3) == 0.75
    s = success_curve(ious)
    # t = 0: 1; t = 0.05..0.30: 0.75 (6 points); 0.35..0.50: 0.5 (4); 0.55..1.0: 0.25 (10)
    assert s.tolist() == [1.0] + [0.75] * 6 + [0.5] * 4 + [0.25] * 10
    # trapezoid: 0.05 * (sum(s) - (s[0] + s[20]) / 2) = 0.05 * (10 - 0.625)
    assert auc(ious) == pytest.approx(0.46875)
    assert auc(ious) == pytest.approx(np.trapezoid(s, np.linspace(0, 1, 21)))
    assert auc([1.0, 1.0]) == pytest.approx(1.0)
    assert auc([0.0]) == pytest.approx(0.025)  # only s(0) = 1: half a trapezoid
    with pytest.raises(ValueError):
        auc([])


# --- binarization ----------------------------------------------------------------------------

SQ = (np.arange(16, dtype=float) ** 2).reshape(4, 4)  # 0, 1, 4, ..., 225


def test_binarize_modes_on_a_small_map():
    # top50: min-max, keep >= the value at sorted position 8 (64 = 8^2): the bottom two rows
    top = binarize(SQ, "top50")
    assert top.dtype == bool and top.sum() == 8 and top[2:].all()
    # fixed: v^2 / 225 >= 0.5 <=> v >= 10.6: pixels 11..15
    assert np.flatnonzero(binarize(SQ, "fixed")).tolist() == [11, 12, 13, 14, 15]
    assert binarize(SQ, "fixed", threshold=0.85).sum() == 2  # v^2 >= 191.25: 14, 15
    # slavc_rel drops the fraction pred_size: 0.75 keeps sorted positions 12..15
    assert np.flatnonzero(binarize(SQ, "slavc_rel", pred_size=0.75)).tolist() == [12, 13, 14, 15]
    assert (binarize(SQ, "slavc_rel") == top).all()  # default pred_size 0.5 == top50
    # slavc_abs: cosine range (-1, 1) -> [0, 1], >= 0.5 <=> cosine >= 0
    cos = np.linspace(-1, 1, 16).reshape(4, 4)
    assert np.flatnonzero(binarize(cos, "slavc_abs")).tolist() == list(range(8, 16))
    assert binarize(cos, "slavc_abs", threshold=0.75).sum() == 4  # cosine >= 0.5
    assert binarize(SQ, "slavc_abs", value_range=(0, 225)).sum() == 5  # like fixed here
    # absolute thresholding ignores the map's own range: a flat low map predicts nothing,
    # while relative modes always predict something
    low = np.full((4, 4), -0.2)
    low[0, 0] = -0.1
    assert binarize(low, "slavc_abs").sum() == 0
    assert binarize(low, "top50").all()  # 15 ties at the minimum are all >= the median
    with pytest.raises(ValueError, match="unknown binarization"):
        binarize(SQ, "otsu")


def test_constant_map_and_batches():
    c = np.full((3, 5), 0.3)
    assert (minmax_normalize(c) == 1).all()
    for mode in ("top50", "fixed", "slavc_rel"):
        assert binarize(c, mode).all(), mode
    batch = np.stack([SQ, SQ[::-1]])
    out = binarize(torch.from_numpy(batch), "top50")
    assert out.shape == (2, 4, 4) and out[0, 2:].all() and out[1, :2].all()
    assert binarization_params("slavc_abs") == {"threshold": 0.5, "value_range": [-1.0, 1.0]}
    assert binarization_params("fixed", threshold=0.3) == {"threshold": 0.3}
    with pytest.raises(ValueError, match="takes no parameter"):
        binarization_params("top50", threshold=0.3)


# --- evaluate and baselines ----------------------------------------------------------------------

def test_evaluate_dict_and_empty_gt():
    gt = np.zeros((3, 4, 4))
    gt[0, 2:, :] = 1  # matches SQ's top half
    gt[1, :2, :] = 1  # the opposite half: cIoU 0
    r = evaluate(np.stack([SQ, SQ, SQ]), gt, "top50")
    assert r["n"] == 2 and r["n_skipped_empty_gt"] == 1  # the empty third sample is left out
    assert r["cIoU@0.5"] == 0.5 and r["mean_cIoU"] == pytest.approx(0.5)
    assert r["AUC"] == pytest.approx(auc([1.0, 0.0]))
    assert r["binarization"] == "top50" and r["binarization_params"] == {}
    with pytest.raises(ValueError, match="empty"):
        evaluate(SQ[None], np.zeros((1, 4, 4)))


def test_center_prior_boxes():
    prior = center_prior(8, 8)
    assert prior.min() >= -1 and prior.max() <= 1
    quarter = np.zeros((8, 8), bool)
    quarter[2:6, 2:6] = True  # half the width, half the height
    assert (binarize(prior, "fixed") == quarter).all()
    assert (binarize(prior, "slavc_abs") == quarter).all()
    half = binarize(prior, "top50")  # the ring at the median is kept whole: 6x6 here
    ring6 = np.zeros((8, 8), bool)
    ring6[1:7, 1:7] = True
    assert (half == ring6).all()
    # non-square frames: boxes follow the aspect ratio
    wide = binarize(center_prior(8, 16), "fixed")
    assert wide.sum() == 4 * 8 and wide[2:6, 4:12].all()


def test_baselines_under_each_binarization():
    gt = np.zeros((2, 8, 8))
    gt[:, 2:6, 2:6] = 1
    for mode in ("top50", "fixed", "slavc_rel", "slavc_abs"):
        whole = binarize(baseline_maps("whole_image", 2, 8, 8), mode)
        assert whole.all(), mode
    table = evaluate_with_baselines(np.zeros((2, 8, 8)) + center_prior(8, 8), gt, "fixed")
    assert set(table) == {"model", "whole_image", "center", "random"}
    assert table["center"]["mean_cIoU"] == pytest.approx(1.0)  # the gt is the centre box
    assert table["whole_image"]["mean_cIoU"] == pytest.approx(16 / 64)
    assert table["random"]["binarization"] == "fixed"
    r1 = baseline_maps("random", 2, 8, 8, seed=3)
    assert (r1 == baseline_maps("random", 2, 8, 8, seed=3)).all()
    assert not (r1 == baseline_maps("random", 2, 8, 8, seed=4)).all()
    assert "cIoU@0.5" in format_table(table) and "center" in format_table(table)


def test_motion_map_is_where_pixels_change() -> None:
    """A square moving right over a still background: the map is the mean absolute
    difference of consecutive frames (written out here), high on the square's path and zero
    elsewhere; a still clip and a single frame give zeros; the extra baseline is scored like
    the built-in ones."""
    frames = np.full((5, 16, 16, 3), 100, np.uint8)
    for t in range(5):
        frames[t, 4:8, 2 + t:6 + t] = (200, 40, 40)
    m = motion_map(frames, 16)
    want = np.abs(np.diff(frames.astype(np.float64), axis=0)).mean(axis=(0, 3))
    np.testing.assert_allclose(m, want, atol=1e-4)  # same size: resizing changes nothing
    assert m[:4].max() == 0 and m[8:].max() == 0 and m[4:8, 2:10].min() > 0
    small = motion_map(frames, (8, 4))
    assert small.shape == (8, 4) and small[2:4].max() > 0 and small[:2].max() == 0
    assert not motion_map(np.repeat(frames[:1], 4, 0), 8).any()
    assert not motion_map(frames[:1], 8).any()
    with pytest.raises(ValueError, match="T, H, W, 3"):
        motion_map(frames[..., 0], 8)
    gt = np.zeros((1, 16, 16))
    gt[0, 4:8, 2:10] = 1
    table = evaluate_with_baselines(np.random.default_rng(0).random((1, 16, 16)), gt, "fixed",
                                    extra={"motion": m[None]})
    assert list(table) == ["model", "whole_image", "center", "random", "motion"]
    assert table["motion"]["mean_cIoU"] > 0.5 > table["whole_image"]["mean_cIoU"]
    with pytest.raises(ValueError, match="already"):
        evaluate_with_baselines(m[None], gt, "fixed", extra={"center": m[None]})


# --- ground truth ---------------------------------------------------------------------------

FLICKR_VOC = """<annotation>
  <filename>10000.jpg</filename>
  <size><width>16</width><height>16</height></size>
  <object><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>8</xmax><ymax>8</ymax></bndbox></object>
  <object><bndbox><xmin>4</xmin><ymin>4</ymin><xmax>12</xmax><ymax>12</ymax></bndbox></object>
</annotation>"""

# The released layout as read by LVS/EZ-VSL: an annotator field first, then the coordinates in
# the 256 x 256 image, by position.
FLICKR_POSITIONAL = """<annotation><bboxes>
  <bbox><annotator>1</annotator><x>0</x><y>0</y><x>128</x><y>128</y></bbox>
  <bbox><annotator>2</annotator><x>64</x><y>64</y><x>192</x><y>192</y></bbox>
  <bbox><annotator>3</annotator><x>0</x><y>0</y><x>128</x><y>128</y></bbox>
</bboxes></annotation>"""


def test_flickr_xml_half_weights_and_consensus():
    assert parse_flickr_xml(FLICKR_VOC) == [[0, 0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75]]
    m = flickr_gt_map(FLICKR_VOC, size=8)
    assert m[2:4, 2:4].tolist() == [[1, 1], [1, 1]]  # inside both boxes: 2 / 2
    assert m[0, 0] == 0.5 and m[5, 5] == 0.5  # inside one box: half weight
    assert m[7, 0] == 0 and m.sum() == 4 * 1 + 24 * 0.5
    m3 = flickr_gt_map(FLICKR_POSITIONAL, size=8)  # 256-pixel coordinates by default
    assert m3[0, 0] == 1 and m3[2, 2] == 1 and m3[5, 5] == 0.5 and m3.max() == 1  # clipped
    assert flickr_gt_map(FLICKR_POSITIONAL).shape == (224, 224)
    # 224 * 64 / 256 = 56: the reference's int(224 * v / 256) edges
    assert box_to_pixels([0.25, 0.25, 0.75, 0.75], 224, 224) == (56, 56, 168, 168)
    with pytest.raises(GroundTruthError, match="no <bbox>"):
        parse_flickr_xml("<annotation><object/></annotation>")
    with pytest.raises(GroundTruthError, match="not valid XML"):
        parse_flickr_xml("<annotation>")


def test_vggss_json_normalized_and_pixels():
    text = json.dumps([{"file": "abc_000010", "bbox": [[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.2, 1]]},
                       {"file": "def.mp4", "bbox": [[0, 0, 0.25, 1]]}])
    boxes = parse_vggss_json(text)
    assert set(boxes) == {"abc_000010", "def"}
    assert boxes["abc_000010"][1] == [0.5, 0.5, 1.0, 1.0]  # clipped to [0, 1]
    m = vggss_gt_map(boxes["abc_000010"], size=4)
    assert m.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]  # union
    px = parse_vggss_json([{"file": "x", "bbox": [[0, 0, 32, 64]]}], normalized=False,
                          image_size=(64, 64))
    assert px["x"] == [[0, 0, 0.5, 1.0]]
    with pytest.raises(ValueError, match="image_size"):
        parse_vggss_json([{"file": "x", "bbox": [[0, 0, 32, 64]]}], normalized=False)
    with pytest.raises(GroundTruthError, match="lacks"):
        parse_vggss_json([{"name": "x"}])


def test_synthetic_track_map_at_time():
    field = {"fps": 10.0, "xyxy": [[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]]}
    assert synthetic_gt_map(field, 0.05, 4, 4)[0, 0] == 1  # frame 0
    m1 = synthetic_gt_map(field, 0.1, 4, 4)  # frame 1 starts at 0.1 s
    assert m1[3, 3] == 1 and m1[0, 0] == 0 and m1.sum() == 4
    assert (synthetic_gt_map(field, 9.0, 4, 6) == boxes_map([[0.5, 0.5, 1, 1]], 4, 6)).all()
    ann = BoxAnnotation.from_row({"id": "a", "boxes": field})
    assert not ann.static and ann.boxes_at(0.15) == [[0.5, 0.5, 1, 1]]
    assert BoxAnnotation.from_row({"id": "b"}) is None


def test_load_boxes_formats(tmp_path):
    flickr = tmp_path / "ann"
    flickr.mkdir()
    (flickr / "10000.xml").write_text(FLICKR_VOC)
    got = load_boxes(flickr)
    assert got["10000"].combine == "consensus" and got["10000"].static
    assert got["10000"].map_at(0.0, 8, 8).max() == 1

    vgg = tmp_path / "vggss.json"
    vgg.write_text(json.dumps([{"file": "clip1", "bbox": [[0, 0, 1, 1]]}]))
    assert load_boxes(vgg)["clip1"].source == "vggss"

    ours = tmp_path / "ours.json"
    ours.write_text(json.dumps({"v1.mp4": {"fps": 4, "xyxy": [[0, 0, 1, 1]]},
                                "v2": [[0, 0, 0.5, 0.5]]}))
    got = load_boxes(ours)
    assert got["v1"].fps == 4 and got["v2"].static and got["v2"].combine == "union"

    meta = tmp_path / "meta.jsonl"
    meta.write_text(json.dumps({"path": "videos/c0_00000.mp4",
                                "boxes": {"fps": 25, "xyxy": [[0, 0, 1, 1]]}}) + "\n"
                    + json.dumps({"path": "videos/nobox.mp4"}) + "\n")
    got = load_boxes(meta)
    assert find(got, "some/dir/c0_00000.mp4") is got["c0_00000"]
    assert find(got, "nobox") is None

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(GroundTruthError, match="not valid JSON"):
        load_boxes(bad)
    with pytest.raises(GroundTruthError, match="not found"):
        load_boxes(tmp_path / "missing.json")
