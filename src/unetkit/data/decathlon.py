"""The Medical Segmentation Decathlon's layout: ``dataset.json`` with ``imagesTr/`` and ``labelsTr/`` volumes.

``dataset.json`` names the classes (``"labels": {"0": "background", "1": "Anterior", ...}``), the image
channels (``"modality": {"0": "MRI"}``) and the training cases (``"training": [{"image":
"./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}, ...]``), paths relative to the json's folder. This is
the layout nnU-Net (v1) and MONAI users bring.

Errors and problems: what makes the set unusable (no or invalid ``dataset.json``, classes not numbered
0..K-1, a missing image or label file) raises :class:`~unetkit.errors.UnetkitError` with one line naming the
file and the fix; what can be worked around (``numTraining`` disagreeing with the list, a missing test image)
is returned in :attr:`DecathlonSet.problems`, one line each, for the caller to print. Whether a label fits
its image (grid and values) is :func:`check_pair`'s business: it reads the voxels, so it runs per case.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unetkit.data.volumes import Volume, read_volume, volume_info
from unetkit.errors import UnetkitError

DATASET_JSON = "dataset.json"
TOLERANCE_MM = 1e-3  # how far a label's spacing and affine may differ from its image's


@dataclass(frozen=True)
class DecathlonSet:
    """A Decathlon data set as its ``dataset.json`` describes it, with every training file present.

    Attributes:
        json_path: The ``dataset.json``; relative paths in it are resolved against its folder.
        name: Its ``name`` (the folder's name when absent).
        classes: Class names by label value: ``classes[i]`` is value ``i`` (``classes[0]`` is background).
        modalities: Image channel names by channel index, e.g. ``("FLAIR", "T1w", "t1gd", "T2w")``.
        pairs: ``(image, label)`` paths of the training cases, in the json's order.
        test_images: Paths of its ``test`` images that exist (the Decathlon gives no test labels).
        problems: One line each for what does not stop training: ``numTraining`` disagreeing with the list,
            missing test images.
    """

    json_path: Path
    name: str
    classes: tuple[str, ...]
    modalities: tuple[str, ...]
    pairs: tuple[tuple[Path, Path], ...]
    test_images: tuple[Path, ...]
    problems: tuple[str, ...]


def _json_path(folder_or_json: Path) -> Path:
    path = folder_or_json / DATASET_JSON if folder_or_json.is_dir() else folder_or_json
    if not path.is_file():
        raise UnetkitError(f"{path}: no such file; a Decathlon data set is a folder with {DATASET_JSON}, imagesTr/ and "
                           "labelsTr/: pass that folder or its dataset.json")  # fmt: skip
    return path


def _load(path: Path) -> dict:
    """The json object in ``path``, or one line saying where it is broken."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UnetkitError(f"{path}: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}); fix the file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UnetkitError(f"{path}: cannot read ({error}); check the file's permissions and encoding (UTF-8)") from None
    if not isinstance(document, dict):
        raise UnetkitError(f"{path}: holds a JSON {type(document).__name__}, not an object; a Decathlon dataset.json is an "
                           "object with labels, modality and training")  # fmt: skip
    missing = [key for key in ("labels", "modality", "training") if key not in document]
    if missing:
        hint = " (an nnU-Net v2 dataset.json: unetkit reads the Decathlon's, which lists the cases)" if "channel_names" in document else ""
        raise UnetkitError(f"{path}: no {', '.join(repr(k) for k in missing)}{hint}; add them as the Decathlon's dataset.json "
                           "has them, e.g. \"labels\": {\"0\": \"background\", \"1\": \"tumour\"}")  # fmt: skip
    return document


def _numbered(mapping: object, key: str, path: Path) -> tuple[str, ...]:
    """The values of ``{"0": name, "1": name, ...}`` by index; the keys must be exactly 0..K-1."""
    if not isinstance(mapping, dict) or not mapping:
        raise UnetkitError(f"{path}: {key!r} must be a non-empty object such as {{\"0\": \"background\", \"1\": \"organ\"}}, "
                           f"got {mapping!r}")  # fmt: skip
    expected = [str(i) for i in range(len(mapping))]
    if sorted(mapping, key=lambda k: (len(str(k)), str(k))) != expected:
        raise UnetkitError(f"{path}: the keys of {key!r} must be \"0\" to \"{len(mapping) - 1}\", got "
                           f"{', '.join(repr(k) for k in mapping)}; number them from 0 without gaps")  # fmt: skip
    return tuple(str(mapping[k]) for k in expected)


def _training(entries: object, path: Path) -> list[tuple[str, str]]:
    """The ``(image, label)`` strings of the ``training`` list, checked for form."""
    if not isinstance(entries, list):
        raise UnetkitError(f"{path}: 'training' must be a list of {{\"image\": ..., \"label\": ...}}, got {type(entries).__name__}")
    pairs = []
    for i, entry in enumerate(entries):
        if not (isinstance(entry, dict) and isinstance(entry.get("image"), str) and isinstance(entry.get("label"), str)):
            raise UnetkitError(f"{path}: training entry {i} is {entry!r}; each must be {{\"image\": \"./imagesTr/x.nii.gz\", "
                               "\"label\": \"./labelsTr/x.nii.gz\"}")  # fmt: skip
        pairs.append((entry["image"], entry["label"]))
    return pairs


def _resolve(root: Path, entry: str) -> Path:
    """A path of ``dataset.json`` (``"./imagesTr/x.nii.gz"``) against the json's folder; absolute ones as they are."""
    return root / entry  # pathlib drops the "./" and keeps an absolute entry whole


def _check_present(pairs: list[tuple[str, str]], root: Path, path: Path) -> tuple[tuple[Path, Path], ...]:
    """Resolved training pairs; raise naming the first missing file and how many are missing."""
    resolved = tuple((_resolve(root, image), _resolve(root, label)) for image, label in pairs)
    missing = [(entry, file) for pair, files in zip(pairs, resolved) for entry, file in zip(pair, files) if not file.is_file()]
    if missing:
        (entry, file), more = missing[0], len(missing) - 1
        others = f" and {more} more of the {2 * len(pairs)} training files" if more else ""
        raise UnetkitError(f"{path}: training file {entry!r} is missing (no {file}){others}; restore the files or remove "
                           "their entries from 'training'")  # fmt: skip
    return resolved


def _test_images(entries: object, root: Path, path: Path) -> tuple[tuple[Path, ...], list[str]]:
    """Test images that exist, and one problem line for the missing ones."""
    entries = [e["image"] if isinstance(e, dict) else e for e in entries] if isinstance(entries, list) else []
    images = [_resolve(root, str(entry)) for entry in entries]
    missing = [image for image in images if not image.is_file()]
    problem = (f"{path}: {len(missing)} of its {len(images)} test images are missing, the first {missing[0]}; they are "
               "left out (the Decathlon gives them without labels: training does not need them)") if missing else None  # fmt: skip
    problems = [problem] if problem else []
    return tuple(image for image in images if image.is_file()), problems


def read_decathlon(folder_or_dataset_json: str | os.PathLike) -> DecathlonSet:
    """Read a Decathlon data set's ``dataset.json`` and check that its training files exist.

    Args:
        folder_or_dataset_json: The folder holding ``dataset.json`` (e.g. ``Task04_Hippocampus/``), or the file.

    Returns:
        The :class:`DecathlonSet`: classes, modalities, training pairs, test images, and problems to print.

    Raises:
        UnetkitError: No ``dataset.json``, invalid JSON, ``labels``/``modality``/``training`` missing or
            malformed (keys not ``"0"`` to ``"K-1"``), or a training image or label file missing.

    Example:
        >>> data = read_decathlon("msd_hippocampus")  # doctest: +SKIP
        >>> data.classes, len(data.pairs)  # doctest: +SKIP
        (('background', 'Anterior', 'Posterior'), 208)
    """
    path = _json_path(Path(folder_or_dataset_json))
    document, root = _load(path), path.parent
    classes = _numbered(document["labels"], "labels", path)
    modalities = _numbered(document["modality"], "modality", path)
    entries = _training(document["training"], path)
    pairs = _check_present(entries, root, path)
    problems = []
    declared = document.get("numTraining")
    if declared is not None and declared != len(entries):
        problems.append(f"{path}: numTraining says {declared!r} but 'training' lists {len(entries)} cases; the list is used: set "
                        f"numTraining to {len(entries)}")  # fmt: skip
    test_images, missing_tests = _test_images(document.get("test", []), root, path)
    name = str(document.get("name") or root.name)
    return DecathlonSet(path, name, classes, modalities, pairs, test_images, tuple(problems + missing_tests))


def is_decathlon(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds a ``dataset.json`` with ``labels`` and ``training``; never raises."""
    path = Path(folder) / DATASET_JSON
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(document, dict) and "labels" in document and "training" in document


def _check_grid(image: Path, label: Path, channels: int | None, tolerance: float) -> None:
    """Refuse a label whose shape, spacing or affine (from the headers) differ from its image's."""
    i, m = volume_info(image), volume_info(label)
    fix = "resample the label onto the image's grid, or copy the image's header into it if only the header is wrong"
    if m.shape[3] != 1:
        raise UnetkitError(f"{label}: a label volume has one channel, this one has {m.shape[3]}; save the class indices as one 3D volume")
    if channels is not None and i.shape[3] != channels:
        raise UnetkitError(f"{image}: {i.shape[3]} channel(s) but dataset.json lists {channels} modalities; save one channel "
                           "per modality on the 4th axis, or fix 'modality'")  # fmt: skip
    if i.shape[:3] != m.shape[:3]:
        raise UnetkitError(f"{label}: shape (Z, Y, X) {m.shape[:3]} differs from its image's {i.shape[:3]} ({image}); {fix}")
    if np.max(np.abs(np.subtract(i.spacing, m.spacing))) > tolerance:
        raise UnetkitError(f"{label}: voxel size (z, y, x) {m.spacing} {m.unit} differs from its image's {i.spacing} ({image}) "
                           f"by more than {tolerance} mm; {fix}")  # fmt: skip
    if i.affine is not None and m.affine is not None and np.max(np.abs(i.affine - m.affine)) > tolerance:
        offset = float(np.max(np.abs(i.affine - m.affine)))
        raise UnetkitError(f"{label}: its affine differs from its image's ({image}) by up to {offset:.4g} mm, beyond "
                           f"{tolerance} mm: the label lies elsewhere in space; {fix}")  # fmt: skip


def _label_values(label: Volume, num_classes: int, path: Path) -> np.ndarray:
    """The label's ``(Z, Y, X, 1)`` values as uint8 (uint16 beyond 256 classes), checked to be 0..num_classes-1."""
    values = label.array
    if values.dtype.kind == "f" and not np.array_equal(values, np.rint(values)):
        bad = values[values != np.rint(values)]  # NaN too
        raise UnetkitError(f"{path}: label values must be whole numbers (class indices), found {bad.flat[0]:g} among "
                           f"{bad.size} voxel(s); save the label as integers 0..{num_classes - 1} (uint8)")  # fmt: skip
    low, high = (values.min(), values.max()) if values.dtype != bool else (0, 1)
    if low < 0 or high >= num_classes:
        found = ", ".join(f"{v:g}" for v in np.unique(values)[:12])
        raise UnetkitError(f"{path}: label values {{{found}}} go beyond the {num_classes} classes of dataset.json (0.."
                           f"{num_classes - 1}); fix the label, or add the class to 'labels'")  # fmt: skip
    return values.astype(np.uint8 if num_classes <= 256 else np.uint16)


def check_pair(
    image_path: str | os.PathLike,
    label_path: str | os.PathLike,
    num_classes: int,
    channels: int | None = None,
    tolerance: float = TOLERANCE_MM,
) -> tuple[Volume, Volume]:
    """Check that a label fits its image, and return both, read once.

    The headers are compared first (cheap): the label has one channel and the image's shape ``(Z, Y, X)``,
    and its spacing and affine agree with the image's within ``tolerance``. Then the label's values must be
    whole numbers in ``0..num_classes-1``: float labels (two of the hippocampus set's) holding whole numbers
    are converted; ``0.5`` is refused.

    Args:
        image_path: The image volume.
        label_path: Its label volume.
        num_classes: Number of classes, ``len(DecathlonSet.classes)``.
        channels: Channels the image must have (``len(DecathlonSet.modalities)``); default None, not checked.
        tolerance: Largest difference of spacing and affine entries, in mm; default 1e-3.

    Returns:
        ``(image, label)``: the image as read, the label's array as ``uint8`` (``uint16`` beyond 256 classes).

    Raises:
        UnetkitError: One line naming the file and the fix, for the first mismatch or unreadable file.

    Example:
        >>> data = read_decathlon("msd_hippocampus")  # doctest: +SKIP
        >>> image, label = check_pair(*data.pairs[0], num_classes=len(data.classes))  # doctest: +SKIP
    """
    image_path, label_path = Path(image_path), Path(label_path)
    _check_grid(image_path, label_path, channels, tolerance)
    image, label = read_volume(image_path), read_volume(label_path)
    values = _label_values(label, num_classes, label_path)
    return image, Volume(values, label.spacing, label.affine, label.unit)

