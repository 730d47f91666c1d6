"""Zero-shot SAM with ground-truth boxes: boxes per class and slice, overlap rule, resizing and padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from masksam.backbones.sam import build_backbone
from masksam.inference import box_prompted
from masksam.inference.box_prompted import box_prompted_labels, box_prompted_logits, class_boxes, unit_range

TINY = build_backbone("tiny", image_size=64)  # random weights: only shapes and plumbing are tested with it


def test_class_boxes_match_hand_written_boxes() -> None:
    labels = torch.zeros(2, 6, 8, dtype=torch.long)
    labels[0, 1:3, 2:5] = 1  # rows 1-2, columns 2-4
    labels[0, 4, 7] = 2  # one pixel
    labels[1, 0:6, 0] = 2  # a full-height column
    boxes, present = class_boxes(labels, [1, 2, 3])
    assert present.tolist() == [[True, True, False], [False, True, False]]
    assert boxes[0, 0].tolist() == [2, 1, 4, 2]
    assert boxes[0, 1].tolist() == [7, 4, 7, 4]
    assert boxes[1, 1].tolist() == [0, 0, 0, 5]
    assert boxes[1, 0].tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize(("low", "high"), [(0.0, 100.0), (5.0, 95.0)], ids=["full-range", "clipped"])
def test_unit_range_maps_the_percentiles_to_zero_and_one(low: float, high: float) -> None:
    volume = np.arange(1000, dtype=np.float64).reshape(10, 10, 10) * 3 - 200
    scaled = unit_range(volume, box_prompted.BoxPromptSettings(lower_percentile=low, upper_percentile=high))
    assert scaled.dtype == np.float32 and scaled.shape == volume.shape
    assert scaled.min() == 0 and scaled.max() == 1
    inside = (volume > np.percentile(volume, low)) & (volume < np.percentile(volume, high))
    assert np.all((scaled[inside] > 0) & (scaled[inside] < 1))


def test_smaller_box_wins_where_masks_overlap(monkeypatch: pytest.MonkeyPatch) -> None:
    # A disc-like class 2 box (large) that contains class 3's box (small); both masks claim the centre.
    reference = np.zeros((1, 8, 8), dtype=np.int16)
    reference[0, 1:7, 1:7] = 2
    reference[0, 3:5, 3:5] = 3

    def fake_logits(backbone, slices, boxes):  # (S, K, H, W): class 2 claims its whole box, class 3 a bit more
        logits = torch.full((1, 3, 8, 8), -5.0)
        logits[0, 1, 1:7, 1:7] = 9.0
        logits[0, 2, 2:6, 2:6] = 1.0
        return logits

    monkeypatch.setattr(box_prompted, "box_prompted_logits", fake_logits)
    labels = box_prompted_labels(TINY, np.random.default_rng(0).random((1, 8, 8)), reference, [1, 2, 3])
    expected = np.zeros((1, 8, 8), dtype=np.int16)
    expected[0, 1:7, 1:7] = 2
    expected[0, 2:6, 2:6] = 3
    np.testing.assert_array_equal(labels, expected)


def test_slices_without_any_class_stay_background(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(box_prompted, "box_prompted_logits", lambda *args: calls.append(args))
    labels = box_prompted_labels(
        TINY, np.random.default_rng(0).random((3, 8, 8)), np.zeros((3, 8, 8), np.int16), [1, 2]
    )
    assert not calls and not labels.any()


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        box_prompted_labels(TINY, np.zeros((2, 8, 8)), np.zeros((2, 8, 9), np.int16), [1])


@pytest.mark.parametrize(("height", "width"), [(40, 64), (64, 40), (30, 30)], ids=["wide", "tall", "small-square"])
def test_logits_come_back_at_the_slice_size_and_follow_the_image(height: int, width: int) -> None:
    backbone = TINY
    slices = torch.rand(2, height, width)
    boxes = torch.tensor([[[2.0, 3.0, 20.0, 25.0]], [[0.0, 0.0, width - 1.0, height - 1.0]]])
    logits = box_prompted_logits(backbone, slices, boxes)
    assert logits.shape == (2, 1, height, width) and torch.isfinite(logits).all()
    # Each slice is segmented from its own image: swapping the images swaps nothing else.
    swapped = box_prompted_logits(backbone, slices.flip(0), boxes.flip(0))
    torch.testing.assert_close(swapped.flip(0), logits, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("image_size", [128, 256], ids=["half-resolution", "native"])
def test_real_lite_medsam_segments_a_phantom_from_its_boxes(tmp_path, image_size: int) -> None:
    # LiteMedSAM's weights at 128² (half its training resolution, 4× cheaper) still segment from a box.
    from masksam.backbones.sam import load_backbone_weights
    from masksam.backbones.weights import find_cached_weights
    from masksam.data.io import read_volume
    from masksam.data.phantoms import write_phantom_dataset

    weights = find_cached_weights("lite_medsam")
    if weights is None:
        pytest.skip("lite_medsam.pth not cached; run `masksam weights lite_medsam`")
    dataset = write_phantom_dataset(tmp_path / "phantoms", num_train=1, num_test=0)
    image = read_volume(next((dataset / "imagesTr").glob("*.nii.gz"))).array.transpose(2, 0, 1)[3:7]
    reference = read_volume(next((dataset / "labelsTr").glob("*.nii.gz")), is_label=True).array.transpose(2, 0, 1)[3:7]
    backbone = load_backbone_weights(build_backbone("lite_medsam", image_size=image_size), weights)
    labels = box_prompted_labels(backbone, image, reference, [1, 2, 3])
    dice = {
        c: 2 * np.sum((labels == c) & (reference == c)) / (np.sum(labels == c) + np.sum(reference == c)) for c in (1, 3)
    }
    assert dice[1] > 0.85 and dice[3] > 0.75, dice  # RV and LV; the myocardium's ring is SAM's weak spot


def test_folder_writes_one_label_map_per_reference_on_the_image_grid(tmp_path) -> None:
    import nibabel as nib
    from data.dataset_builders import make_dataset

    from masksam.inference.box_prompted import box_prompted_folder

    dataset = make_dataset(tmp_path / "Dataset001_Synthetic", num_cases=2)
    output = tmp_path / "out"
    first = sorted((dataset / "labelsTr").glob("*.nii.gz"))[0]
    output.mkdir()
    (output / first.name).write_bytes(b"kept")  # an existing prediction is not redone
    written = box_prompted_folder(TINY, dataset / "imagesTr", dataset / "labelsTr", output, [1, 2], slice_axis=2)
    assert [path.name for path in written] == [sorted((dataset / "labelsTr").glob("*.nii.gz"))[1].name]
    assert (output / first.name).read_bytes() == b"kept"
    image = nib.load(dataset / "imagesTr" / written[0].name.replace(".nii.gz", "_0000.nii.gz"))
    label = nib.load(written[0])
    assert label.shape == image.shape and np.allclose(label.affine, image.affine)
    assert set(np.unique(np.asarray(label.dataobj))) <= {0, 1, 2}
