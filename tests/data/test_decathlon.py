"""Tests of unetkit.data.decathlon on a generated Decathlon layout, and on msd_hippocampus when present."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shared_data
from unetkit.data.decathlon import check_pair, is_decathlon, read_decathlon
from unetkit.data.volumes import volume_info, write_volume
from unetkit.errors import UnetkitError

SHAPE = (8, 10, 12)  # (Z, Y, X)
AFFINE = np.array([[0.0, 0.0, -0.8, 20.0], [0.0, 1.0, 0.0, -4.0], [1.5, 0.0, 0.0, 7.5], [0.0, 0.0, 0.0, 1.0]])  # x, y, z -> world
SPACING = (0.8, 1.0, 1.5)  # (z, y, x): the lengths of AFFINE's columns z, y, x
CLASSES = {"0": "background", "1": "liver", "2": "tumour"}
MODALITIES = {"0": "CT", "1": "PET"}


def _label(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 3, SHAPE).astype(np.uint8)  # (Z, Y, X)


def _layout(root: Path, cases: int = 3, **changes) -> Path:
    """A Decathlon folder: two-channel float32 images, uint8 labels 0..2, and its dataset.json."""
    training = []
    for i in range(cases):
        image = np.random.default_rng(i).random((*SHAPE, 2)).astype(np.float32)  # (Z, Y, X, C)
        write_volume(root / "imagesTr" / f"case_{i:03d}.nii.gz", image, SPACING, AFFINE)
        write_volume(root / "labelsTr" / f"case_{i:03d}.nii.gz", _label(i), SPACING, AFFINE)
        training.append({"image": f"./imagesTr/case_{i:03d}.nii.gz", "label": f"./labelsTr/case_{i:03d}.nii.gz"})
    document = {"name": "Toy", "tensorImageSize": "4D", "modality": MODALITIES, "labels": CLASSES,
                "numTraining": cases, "numTest": 0, "training": training, "test": []}  # fmt: skip
    document.update(changes)
    (root / "dataset.json").write_text(json.dumps(document, indent=1))
    return root


def _error(path: Path, message: str):
    return pytest.raises(UnetkitError, match=rf"^{re.escape(str(path))}: {message}[^\n]*$")


# dataset.json -----------------------------------------------------------------------------------------


def test_a_generated_layout_reads_as_is(tmp_path):
    data = read_decathlon(_layout(tmp_path))
    assert data.json_path == tmp_path / "dataset.json" and data.name == "Toy"
    assert data.classes == ("background", "liver", "tumour") and data.modalities == ("CT", "PET")
    assert data.pairs == tuple((tmp_path / "imagesTr" / f"case_{i:03d}.nii.gz", tmp_path / "labelsTr" / f"case_{i:03d}.nii.gz") for i in range(3))
    assert data.test_images == () and data.problems == ()
    assert read_decathlon(tmp_path / "dataset.json") == data
    assert is_decathlon(tmp_path)


def test_labels_are_ordered_by_their_number_not_their_position(tmp_path):
    labels = {str(i): f"class {i}" for i in (10, 0, 2, 1, 3, 4, 5, 6, 7, 8, 9)}
    assert read_decathlon(_layout(tmp_path, labels=labels)).classes == tuple(f"class {i}" for i in range(11))


def test_a_missing_training_file_names_the_entry_and_the_fix(tmp_path):
    _layout(tmp_path)
    (tmp_path / "labelsTr" / "case_001.nii.gz").unlink()
    (tmp_path / "imagesTr" / "case_002.nii.gz").unlink()
    with _error(tmp_path / "dataset.json", r"training file '\./labelsTr/case_001\.nii\.gz' is missing \(no .*case_001\.nii\.gz\) "
                r"and 1 more of the 6 training files; restore the files or remove their entries from 'training'"):  # fmt: skip
        read_decathlon(tmp_path)


def test_num_training_disagreeing_is_a_problem_not_an_error(tmp_path):
    data = read_decathlon(_layout(tmp_path, numTraining=5))
    assert len(data.pairs) == 3
    expected = f"{tmp_path / 'dataset.json'}: numTraining says 5 but 'training' lists 3 cases; the list is used: set numTraining to 3"
    assert data.problems == (expected,)


def test_missing_test_images_are_a_problem(tmp_path):
    _layout(tmp_path, test=["./imagesTs/a.nii.gz", "./imagesTr/case_000.nii.gz"])
    data = read_decathlon(tmp_path)
    assert data.test_images == (tmp_path / "imagesTr" / "case_000.nii.gz",)
    assert len(data.problems) == 1 and "1 of its 2 test images are missing, the first" in data.problems[0]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"labels": {"0": "background", "2": "tumour"}}, r"the keys of 'labels' must be \"0\" to \"1\", got '0', '2'; number them from 0"),
        ({"modality": {}}, r"'modality' must be a non-empty object"),
        ({"training": {"image": "x"}}, r"'training' must be a list"),
        ({"training": [{"image": "./imagesTr/case_000.nii.gz"}]}, r"training entry 0 is .*; each must be"),
    ],
)
def test_a_malformed_dataset_json_is_refused_with_the_fix(tmp_path, changes, message):
    with _error(tmp_path / "dataset.json", message):
        read_decathlon(_layout(tmp_path, cases=1, **changes))


def test_no_or_broken_dataset_json(tmp_path):
    with _error(tmp_path / "dataset.json", r"no such file; a Decathlon data set is a folder with dataset.json"):
        read_decathlon(tmp_path)
    assert not is_decathlon(tmp_path)
    (tmp_path / "dataset.json").write_text('{"labels": {"0": "background"},\n "training": [}')
    with _error(tmp_path / "dataset.json", r"not valid JSON \(.* at line 2, column \d+\); fix the file"):
        read_decathlon(tmp_path)
    assert not is_decathlon(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0}}))
    with _error(tmp_path / "dataset.json", r"no 'modality', 'training' \(an nnU-Net v2 dataset.json"):
        read_decathlon(tmp_path)


# check_pair -------------------------------------------------------------------------------------------


def test_check_pair_returns_the_image_and_the_label_as_uint8(tmp_path):
    data = read_decathlon(_layout(tmp_path, cases=1))
    np.testing.assert_allclose(np.linalg.norm(AFFINE[:3, :3], axis=0)[::-1], SPACING)  # the layout is self-consistent
    image, label = check_pair(*data.pairs[0], num_classes=3, channels=2)
    assert image.array.shape == (*SHAPE, 2) and label.array.shape == (*SHAPE, 1) and label.array.dtype == np.uint8
    np.testing.assert_array_equal(label.array[..., 0], _label(0))
    np.testing.assert_allclose(label.spacing, SPACING, rtol=1e-6)
    np.testing.assert_array_equal(label.affine, image.affine)


def _pair(tmp_path: Path, label: np.ndarray, spacing=SPACING, affine=AFFINE) -> tuple[Path, Path]:
    image = tmp_path / "image.nii.gz"
    write_volume(image, np.zeros(SHAPE, np.float32), SPACING, AFFINE)
    write_volume(tmp_path / "label.nii.gz", label, spacing, affine)
    return image, tmp_path / "label.nii.gz"


def test_check_pair_refuses_a_label_of_another_shape(tmp_path):
    image, label = _pair(tmp_path, np.zeros((8, 10, 11), np.uint8))
    with _error(label, r"shape \(Z, Y, X\) \(8, 10, 11\) differs from its image's \(8, 10, 12\) \(.*image.nii.gz\); resample the label"):
        check_pair(image, label, num_classes=3)


def test_check_pair_refuses_a_label_elsewhere_in_space(tmp_path):
    moved = AFFINE.copy()
    moved[:3, 3] += (0.0, 0.0, 2.0)
    image, label = _pair(tmp_path, _label(0), affine=moved)
    with _error(label, r"its affine differs from its image's \(.*\) by up to 2 mm, beyond 0.001 mm: the label lies elsewhere"):
        check_pair(image, label, num_classes=3)
    moved[:3, 3] = AFFINE[:3, 3] + 4e-4  # within the tolerance
    write_volume(label, _label(0), SPACING, moved)
    check_pair(image, label, num_classes=3)


def test_check_pair_refuses_a_label_with_other_voxel_sizes(tmp_path):
    image, label = _pair(tmp_path, _label(0), spacing=(0.8, 1.0, 1.6))
    with _error(label, r"voxel size \(z, y, x\) \(0.8.*, 1.0, 1.6.*\) mm differs from its image's .* by more than 0.001 mm"):
        check_pair(image, label, num_classes=3)


def test_check_pair_checks_channels_against_the_modalities(tmp_path):
    image, label = _pair(tmp_path, _label(0))
    with _error(image, r"1 channel\(s\) but dataset.json lists 2 modalities"):
        check_pair(image, label, num_classes=3, channels=2)
    write_volume(label, np.stack([_label(0)] * 2, axis=-1), SPACING, AFFINE)
    with _error(label, "a label volume has one channel, this one has 2"):
        check_pair(image, label, num_classes=3)


def test_float_labels_with_whole_values_are_converted(tmp_path):
    image, label = _pair(tmp_path, _label(0).astype(np.float32))
    assert volume_info(label).dtype == np.float32
    _, read = check_pair(image, label, num_classes=3)
    assert read.array.dtype == np.uint8
    np.testing.assert_array_equal(read.array[..., 0], _label(0))


def test_float_labels_with_fractions_are_refused(tmp_path):
    values = _label(0).astype(np.float32)
    values[2, 3, 4] = 0.5
    image, label = _pair(tmp_path, values)
    with _error(label, r"label values must be whole numbers \(class indices\), found 0.5 among 1 voxel\(s\); save the label as integers 0..2"):
        check_pair(image, label, num_classes=3)


def test_label_values_beyond_the_classes_are_refused(tmp_path):
    values = _label(0)
    values[0, 0, 0] = 7
    image, label = _pair(tmp_path, values)
    with _error(label, r"label values \{0, 1, 2, 7\} go beyond the 3 classes of dataset.json \(0..2\); fix the label"):
        check_pair(image, label, num_classes=3)


# Real data --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_msd_hippocampus_reads_and_a_case_checks():
    folder = shared_data("msd_hippocampus")
    declared = json.loads((folder / "dataset.json").read_text())
    data = read_decathlon(folder)
    assert is_decathlon(folder) and data.problems == ()
    assert len(data.pairs) == 208 == declared["numTraining"]
    assert data.classes == tuple(declared["labels"][str(i)] for i in range(len(declared["labels"])))
    assert data.classes == ("background", "Anterior", "Posterior") and data.modalities == ("MRI",)
    image, label = check_pair(*data.pairs[0], num_classes=len(data.classes), channels=len(data.modalities))
    assert image.array.shape[:3] == label.array.shape[:3] and image.array.shape[3] == 1
    assert image.spacing == label.spacing == (1.0, 1.0, 1.0) and image.unit == "mm"
    assert set(np.unique(label.array)) <= {0, 1, 2}


@pytest.mark.slow
def test_msd_hippocampus_float32_labels_are_accepted():
    data = read_decathlon(shared_data("msd_hippocampus"))
    floats = [(image, label) for image, label in data.pairs if volume_info(label).dtype.kind == "f"]
    assert len(floats) == 2  # as ../shared/data/README.md says
    for image, label in floats:
        assert check_pair(image, label, num_classes=3, channels=1)[1].array.dtype == np.uint8
