"""Ensembles: several trained models as one :class:`~unetkit.inference.predictor.Segmenter` that averages their
class probabilities, and the ``ensemble.yaml`` file that lists them (``unetkit train --folds`` writes one).

:class:`EnsembleForward` is a tile function like every backend: each batch of tiles runs through every
member, their softmax probabilities are averaged, and the log of the average comes back, so the softmax
that every prediction path applies gives the averaged probabilities (the trick of
:class:`~unetkit.inference.tta.TTAForward`). The average is per pixel, so in valid mode the tiled (and
streamed) prediction of an ensemble equals the mean of its members' whole-image probabilities.

Members must agree on what the average and the tiling need: classes (names and order), target, input
channels, padding mode and, in valid mode, depth (the context a tile loses); in same mode the tiles
follow the deepest member's stride, which every shallower member accepts too. Each member keeps its own
normalisation: when they differ (models trained on different images, such as cross-validation folds),
tiles reach the ensemble in raw units and each member standardises them itself, exactly as it would alone.
With test-time augmentation each member averages its own transforms (those its training allows) first.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from unetkit.errors import UnetkitError
from unetkit.files import atomic_write
from unetkit.inference.predictor import Segmenter, standardize
from unetkit.inference.stitch import TileFunction
from unetkit.inference.tta import log_probabilities, softmax
from unetkit.models.config import ModelConfig
from unetkit.yaml_files import read_yaml

MANIFEST = "ensemble.yaml"  # the file of an ensemble folder
KIND = "unetkit-ensemble"
MANIFEST_KEYS = ("kind", "version", "members", "classes")
VERSION = 1


class EnsembleForward:
    """A tile function averaging the class probabilities of several tile functions.

    (B, C, h, w) tiles -> (B, K, h', w') float32 log of the mean of ``softmax(forward(x))`` over ``forwards``.
    With ``normalizations`` (one ``{"mean", "std"}`` per member) the tiles come in raw units as float32 and
    member ``m`` gets ``standardize(x, mean_m, std_m)``; without, every member takes ``x`` as it is.
    NaN or infinite logits of any member give NaN, so prediction still refuses them.

    Attributes:
        forwards: The members' tile functions.
        config: The geometry the tiles are planned with (see :func:`ensemble_config`).
    """

    def __init__(self, forwards: list[TileFunction], config: ModelConfig, normalizations: list[dict] | None = None) -> None:
        if not forwards:
            raise ValueError("EnsembleForward needs at least one member")
        if normalizations is not None and len(normalizations) != len(forwards):
            raise ValueError(f"{len(normalizations)} normalisations for {len(forwards)} members")
        self.forwards = list(forwards)
        self.config = config
        self.normalizations = normalizations

    def __call__(self, x: np.ndarray) -> np.ndarray:
        total = None
        for m, forward in enumerate(self.forwards):
            norm = None if self.normalizations is None else self.normalizations[m]
            xm = x if norm is None else standardize(x, norm["mean"], norm["std"], axis=1)  # (B, C, h, w)
            probs = softmax(np.asarray(forward(xm), np.float32), axis=1)  # (B, K, h', w')
            if total is not None and probs.shape != total.shape:
                raise ValueError(f"ensemble member {m} returned {probs.shape}, member 0 {total.shape}")
            total = probs if total is None else total + probs
        return log_probabilities(total / np.float32(len(self.forwards)))  # (B, K, h', w')


def _refuse(name: str, mine: str, first: str, theirs: str, fix: str) -> None:
    raise UnetkitError(f"{name} {mine}, but {first} {theirs}; {fix}")


def ensemble_config(configs: list[ModelConfig], names: list[str]) -> ModelConfig:
    """The tiling geometry of members with ``configs`` (files ``names``): the first member's, with the deepest
    member's depth in same mode. Refuses members whose channels, padding or valid-mode context differ."""
    first, name0 = configs[0], names[0]
    for config, name in zip(configs[1:], names[1:]):
        if config.in_channels != first.in_channels:
            _refuse(name, f"takes {config.in_channels} input channel(s)", name0, f"takes {first.in_channels}",
                    "ensemble models trained on images of the same channels")
        if config.padding != first.padding:
            _refuse(name, f"has padding {config.padding!r}", name0, f"has {first.padding!r}",
                    "ensemble models of one padding mode (the tiles of valid and same models do not line up)")
        if first.padding == "valid" and config.depth != first.depth:
            _refuse(name, f"has depth {config.depth}", name0, f"has depth {first.depth} (in valid mode another context around each tile)",
                    "ensemble valid-mode models of one --depth, or models trained with --padding same")
    return dataclasses.replace(first, depth=max(c.depth for c in configs))


def _check_labels(metas: list[dict], names: list[str]) -> None:
    """Refuse members whose classes (names and order) or target differ from the first member's."""
    first, name0 = metas[0], names[0]
    for meta, name in zip(metas[1:], names[1:]):
        if list(meta["classes"]) != list(first["classes"]):
            _refuse(name, f"predicts the classes {', '.join(meta['classes'])}", name0, f"predicts {', '.join(first['classes'])}",
                    "ensemble models trained on the same classes in the same order")
        target, target0 = meta.get("target", "semantic"), first.get("target", "semantic")
        if target != target0:
            _refuse(name, f"was trained with --target {target}", name0, f"with --target {target0}", "ensemble models of one --target")


def ensemble_meta(metas: list[dict], config: ModelConfig, names: list[str], normalization: dict) -> dict:
    """What the members agree on, with the ensemble's geometry, ``normalization``, the first member's colours and
    ``ensemble``: the member files ``names``."""
    shared = {k: v for k, v in metas[0].items() if all(m.get(k) == v for m in metas[1:])}
    return {**shared, "model": config.to_dict(), "normalization": normalization, "classes": list(metas[0]["classes"]),
            "colors": metas[0]["colors"], "ensemble": list(names)}  # fmt: skip


def ensemble_segmenter(members: list[Segmenter], names: list[str]) -> Segmenter:
    """One :class:`Segmenter` averaging the class probabilities of ``members`` (loaded from the files ``names``).

    It runs with the first member's options (tile, batch, device, precision); members loaded with ``tta``
    average their own transforms first.

    Raises:
        UnetkitError: naming two members and the fix, when they differ in classes, target, input channels,
            padding, or depth in valid mode (see the module docstring).

    Example:
        >>> seg = ensemble_segmenter([load_segmenter("a.pt"), load_segmenter("b.pt")], ["a.pt", "b.pt"])  # doctest: +SKIP
    """
    metas = [m.meta for m in members]
    _check_labels(metas, names)
    config = ensemble_config([m.config for m in members], names)
    norms = [m.meta["normalization"] for m in members]
    same = all(n["mean"] == norms[0]["mean"] and n["std"] == norms[0]["std"] for n in norms[1:])
    channels = config.in_channels
    normalization = norms[0] if same else {"mean": [0.0] * channels, "std": [1.0] * channels}  # raw units: members standardise
    forward = EnsembleForward([m.forward for m in members], config, None if same else norms)
    options = members[0].options
    seg = Segmenter(forward, ensemble_meta(metas, config, names, normalization), dataclasses.replace(options, tta=False), members[0].progress)
    seg.options = options  # members already run test-time augmentation: no second pass around the average
    return seg


# --- ensemble.yaml ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """An ``ensemble.yaml``: the member files (resolved against its folder) and the classes they predict."""

    path: Path
    members: list[Path]
    classes: list[str] | None


def manifest_path(model: str | Path) -> Path | None:
    """The ensemble file that ``model`` names: ``model/ensemble.yaml`` for a folder, ``model`` itself for a
    ``.yaml``/``.yml`` file; None for anything else (a model file)."""
    path = Path(model)
    if path.is_dir():
        if not (path / MANIFEST).is_file():
            raise UnetkitError(f"{path}: a folder, not a checkpoint, and it holds no {MANIFEST}; pass the best.pt (or last.pt) file in a run "
                               f"folder, or a folder that unetkit train --folds finished (an unfinished one: unetkit train --resume {path})")
        return path / MANIFEST
    return path if path.suffix.lower() in (".yaml", ".yml") else None


def _read_mapping(path: Path) -> dict:
    try:
        data = read_yaml(path)  # safe_load: tags that would build objects are a YAML error
    except FileNotFoundError:
        raise UnetkitError(f"{path}: ensemble file not found; pass a folder written by unetkit train --folds or its {MANIFEST}") from None
    except OSError as e:
        raise UnetkitError(f"{path}: cannot read the ensemble file ({e.strerror or type(e).__name__})") from None
    except yaml.YAMLError as e:
        raise UnetkitError(f"{path}: not valid YAML ({str(e).splitlines()[0]}); fix it or write it again with unetkit train --folds") from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise UnetkitError(f"{path}: not an ensemble file (expected a mapping with kind: {KIND}, members: [model files]); "
                           "pass a checkpoint, or a folder written by unetkit train --folds")
    for key in data:
        if key not in MANIFEST_KEYS:
            close = difflib.get_close_matches(str(key), MANIFEST_KEYS, n=1)
            raise UnetkitError(f"{path}: unknown key {key!r}" + (f"; did you mean {close[0]!r}?" if close else f"; keys are {', '.join(MANIFEST_KEYS)}"))
    if not isinstance(data.get("version", VERSION), int) or data.get("version", VERSION) > VERSION:
        raise UnetkitError(f"{path}: ensemble format {data.get('version')!r} is newer than this unetkit reads ({VERSION}); upgrade unetkit")
    return data


def read_manifest(path: str | Path) -> Manifest:
    """Read an ``ensemble.yaml`` (YAML safe_load: nothing in it runs); relative members are relative to its folder.

    Raises:
        UnetkitError: naming the file and the fix, for a file that is not an ensemble file, members that are not
            a non-empty list of model files or are missing, or classes that are not a list of names.
    """
    path = Path(path)
    data = _read_mapping(path)
    members, classes = data.get("members"), data.get("classes")
    if not isinstance(members, list) or not members or not all(isinstance(m, str) and m.strip() for m in members):
        raise UnetkitError(f"{path}: members is {members!r}; expected a list of model files (checkpoints or .onnx), e.g. [fold0/best.pt]")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise UnetkitError(f"{path}: classes is {classes!r}; expected a list of class names, or no classes key")
    files = [path.parent / m for m in members]
    for given, file in zip(members, files):
        if not file.is_file() or manifest_path(file) is not None:
            what = "not found" if not file.exists() else "not a model file (ensembles do not nest)"
            raise UnetkitError(f"{path}: member {given} is {what} ({file}); restore it, or remove it from members")
    return Manifest(path, files, classes)


def check_manifest_classes(manifest: Manifest, seg: Segmenter) -> None:
    """Refuse an ensemble file whose ``classes`` are not those its members predict (the file was edited)."""
    if manifest.classes is not None and list(manifest.classes) != list(seg.classes):
        raise UnetkitError(f"{manifest.path}: lists the classes {', '.join(manifest.classes)} but its members predict {', '.join(seg.classes)}; "
                           "correct its classes (or remove the key)")


def write_manifest(path: str | Path, members: list[str], classes: list[str]) -> Path:
    """Write ``path`` (an ``ensemble.yaml``, atomically) listing ``members`` (paths relative to its folder) and ``classes``."""
    text = ("# A unetkit ensemble: `unetkit predict --model FOLDER` (this file's folder, or this file) averages the class probabilities "
            "of its members.\n"
            + yaml.safe_dump({"kind": KIND, "version": VERSION, "members": list(members), "classes": list(classes)}, sort_keys=False))  # fmt: skip
    with atomic_write(path) as tmp:
        Path(tmp).write_text(text)
    return Path(path)
