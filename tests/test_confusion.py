"""Confusion matrices: accumulation on numpy arrays and torch tensors, and from raster files on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from rasterio.transform import from_origin

from flairkit.data.rasters import LAMBERT93, write_raster
from flairkit.errors import DataError
from flairkit.evaluation.confusion import ConfusionAccumulator, confusion_matrix
from flairkit.evaluation.pairs import confusion_from_files, pair_predictions, prediction_name
from flairkit.nomenclature import get_nomenclature

N = 19
IGNORE = 255


def brute_force(predictions: np.ndarray, targets: np.ndarray, n: int, ignore: int = IGNORE) -> np.ndarray:
    counts = np.zeros((n, n), dtype=np.int64)
    for p, t in zip(predictions.reshape(-1).tolist(), targets.reshape(-1).tolist(), strict=True):
        if t != ignore:
            counts[t, p] += 1
    return counts


@pytest.fixture(scope="module")
def batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    predictions = rng.integers(0, N, size=(3, 24, 24), dtype=np.uint8)
    targets = rng.integers(0, N, size=(3, 24, 24), dtype=np.uint8)
    targets[rng.random(targets.shape) < 0.1] = IGNORE
    return predictions, targets


def test_numpy_counts_equal_brute_force(batch):
    predictions, targets = batch
    matrix = confusion_matrix(predictions, targets, N)
    assert matrix.dtype == np.int64 and matrix.shape == (N, N)
    np.testing.assert_array_equal(matrix, brute_force(predictions, targets, N))
    assert matrix.sum() == (targets != IGNORE).sum()


def test_accumulating_batches_equals_one_call(batch):
    predictions, targets = batch
    accumulator = ConfusionAccumulator(N)
    for p, t in zip(predictions, targets, strict=True):
        accumulator.update(p, t)
    np.testing.assert_array_equal(accumulator.matrix, brute_force(predictions, targets, N))
    accumulator.reset()
    assert accumulator.matrix.sum() == 0


def test_torch_tensors_and_mixed_inputs(batch):
    predictions, targets = batch
    expected = brute_force(predictions, targets, N)
    tensors = torch.from_numpy(predictions).long(), torch.from_numpy(targets)
    np.testing.assert_array_equal(confusion_matrix(*tensors, N), expected)
    np.testing.assert_array_equal(confusion_matrix(tensors[0], targets, N), expected)
    np.testing.assert_array_equal(confusion_matrix(predictions, tensors[1], N), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors(batch):
    predictions, targets = batch
    on_gpu = torch.from_numpy(predictions).cuda(), torch.from_numpy(targets).cuda()
    np.testing.assert_array_equal(confusion_matrix(*on_gpu, N), brute_force(predictions, targets, N))


def test_custom_ignore_index_and_all_ignored():
    targets = np.array([[0, 1, -1], [2, -1, 2]])
    predictions = np.array([[0, 2, 1], [2, 0, 1]])
    np.testing.assert_array_equal(
        confusion_matrix(predictions, targets, 3, ignore_index=-1), brute_force(predictions, targets, 3, -1)
    )
    assert confusion_matrix(predictions, np.full_like(targets, -1), 3, ignore_index=-1).sum() == 0


def test_merge_matrices_and_accumulators(batch):
    predictions, targets = batch
    first, second = ConfusionAccumulator(N), ConfusionAccumulator(N)
    first.update(predictions[0], targets[0])
    second.update(predictions[1:], targets[1:])
    first.merge(second)
    np.testing.assert_array_equal(first.matrix, brute_force(predictions, targets, N))
    first.merge(second.matrix)
    assert first.matrix.sum() == (targets != IGNORE).sum() + second.matrix.sum()
    with pytest.raises(DataError, match="shape"):
        first.merge(np.zeros((3, 3), dtype=np.int64))
    with pytest.raises(DataError, match="non-integer"):
        first.merge(np.full((N, N), 0.5))


def test_matrix_property_is_a_copy():
    accumulator = ConfusionAccumulator(2)
    accumulator.update(np.array([0, 1]), np.array([0, 0]))
    accumulator.matrix[0, 0] = 99
    assert accumulator.matrix[0, 0] == 1


def test_invalid_inputs_are_refused():
    with pytest.raises(DataError, match="differ"):
        confusion_matrix(np.zeros((2, 3), dtype=np.uint8), np.zeros((3, 2), dtype=np.uint8), 4)
    with pytest.raises(DataError, match=r"predictions hold values in 0\.\.7"):
        confusion_matrix(np.array([0, 7]), np.array([0, 1]), 4)
    with pytest.raises(DataError, match="targets hold values"):
        confusion_matrix(np.array([0, 1]), np.array([0, 9]), 4)
    with pytest.raises(DataError, match="predictions hold values"):
        confusion_matrix(torch.tensor([0, 7]), torch.tensor([0, 1]), 4)


# --------------------------------------------------------------------------------------------------
# Files: PRED_IMG_<id>.tif (0-based targets) against MSK_<id>.tif (FLAIR codes)
# --------------------------------------------------------------------------------------------------


def write_tif(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_raster(path, array.astype(np.uint8), crs=LAMBERT93, transform=from_origin(0, 0, 0.2, 0.2))


@pytest.fixture(scope="module")
def patches(tmp_path_factory) -> tuple[Path, list[Path], list[np.ndarray], list[np.ndarray]]:
    root = tmp_path_factory.mktemp("patches")
    rng = np.random.default_rng(3)
    masks, mask_arrays, pred_arrays = [], [], []
    for k, zone in enumerate(["Z1_AA", "Z2_AB", "Z2_AB"]):
        mask = rng.integers(1, 20, size=(16, 16))
        mask[0, :3] = 0  # not a FLAIR code: ignored
        prediction = rng.integers(0, 19, size=(16, 16))
        masks.append(write_tif(root / "labels" / zone / "msk" / f"MSK_00000{k}.tif", mask))
        write_tif(root / "preds" / zone / f"PRED_IMG_00000{k}.tif", prediction)
        mask_arrays.append(mask)
        pred_arrays.append(prediction)
    return root, masks, mask_arrays, pred_arrays


def test_prediction_name():
    assert prediction_name(Path("a/MSK_000826.tif")) == "PRED_IMG_000826.tif"
    with pytest.raises(DataError, match=r"MSK_<id>\.tif"):
        prediction_name(Path("IMG_000826.tif"))


def test_confusion_from_files_equals_counting_the_mapped_arrays(patches):
    root, masks, mask_arrays, pred_arrays = patches
    nomenclature = get_nomenclature("15cl")
    pairs = pair_predictions(root / "preds", masks)
    assert [p.name for p, _ in pairs] == ["PRED_IMG_000000.tif", "PRED_IMG_000001.tif", "PRED_IMG_000002.tif"]
    assert [m for _, m in pairs] == masks
    matrix = confusion_from_files(pairs, nomenclature)
    expected = sum(brute_force(p, nomenclature.map_mask(m), 19) for p, m in zip(pred_arrays, mask_arrays, strict=True))
    np.testing.assert_array_equal(matrix, expected)
    assert matrix.sum() == sum(int((m > 0).sum()) for m in mask_arrays)


def test_13_class_masks_are_remapped(patches):
    root, masks, mask_arrays, pred_arrays = patches
    nomenclature = get_nomenclature("13cl")
    clipped = [np.minimum(p, 12) for p in pred_arrays]
    folder = root / "preds13"
    for mask, prediction in zip(masks, clipped, strict=True):
        write_tif(folder / prediction_name(mask), prediction)
    matrix = confusion_from_files(pair_predictions(folder, masks), nomenclature)
    truth = [np.where(m > 0, np.minimum(m, 13) - 1, IGNORE) for m in mask_arrays]
    expected = sum(brute_force(p, t, 13) for p, t in zip(clipped, truth, strict=True))
    np.testing.assert_array_equal(matrix, expected)


def test_missing_predictions_are_listed(patches, tmp_path):
    _, masks, _, _ = patches
    write_tif(tmp_path / "PRED_IMG_000001.tif", np.zeros((16, 16)))
    with pytest.raises(DataError, match=r"2 of 3 predictions are missing.*PRED_IMG_000000\.tif.*PRED_IMG_000002\.tif"):
        pair_predictions(tmp_path, masks)
    with pytest.raises(DataError, match="does not exist"):
        pair_predictions(tmp_path / "nowhere", masks)


def test_duplicate_predictions_are_refused(patches, tmp_path):
    _, masks, _, _ = patches
    write_tif(tmp_path / "a" / "PRED_IMG_000000.tif", np.zeros((16, 16)))
    write_tif(tmp_path / "b" / "PRED_IMG_000000.tif", np.zeros((16, 16)))
    with pytest.raises(DataError, match="found twice"):
        pair_predictions(tmp_path, masks[:1])


def test_size_mismatch_names_both_files(patches, tmp_path):
    _, masks, _, _ = patches
    prediction = write_tif(tmp_path / "PRED_IMG_000000.tif", np.zeros((8, 16)))
    with pytest.raises(DataError) as error:
        confusion_from_files([(prediction, masks[0])], get_nomenclature("15cl"))
    assert str(prediction) in str(error.value) and str(masks[0]) in str(error.value)


def test_out_of_range_prediction_names_the_file(patches, tmp_path):
    _, masks, _, _ = patches
    prediction = write_tif(tmp_path / "PRED_IMG_000000.tif", np.full((16, 16), 14))
    with pytest.raises(DataError, match=r"PRED_IMG_000000\.tif holds class indices 14..14.*13 targets"):
        confusion_from_files([(prediction, masks[0])], get_nomenclature("13cl"))


def test_no_pairs_is_an_error():
    with pytest.raises(DataError, match="no \\(prediction, mask\\) pair"):
        confusion_from_files([], get_nomenclature("15cl"))
