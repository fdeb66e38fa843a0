"""The one loader of trained models: a checkpoint or an exported file -> a :class:`Segmenter` ready to predict.

It sits above the export layer because a checkpoint may run through ONNX Runtime (exported on the fly,
cached) or int8 quantisation (:mod:`unetkit.quantize`); the prediction code below it knows nothing of
either and takes any :class:`~unetkit.inference.predictor.Segmenter`. Several models, or an ensemble folder,
load as one Segmenter that averages their class probabilities (:mod:`unetkit.inference.ensemble`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from unetkit.errors import UnetkitError
from unetkit.inference.ensemble import Manifest, check_manifest_classes, ensemble_segmenter, manifest_path, read_manifest
from unetkit.inference.onnx_backend import load_onnx
from unetkit.inference.options import InferenceOptions
from unetkit.inference.predictor import Segmenter
from unetkit.quantize import load_with_backend

Model = str | Path | Segmenter
#: What ``model`` may be wherever a model is loaded: one model, or several to average.
Models = Model | Sequence[Model]


def load_segmenter(model: Models, options: InferenceOptions | None = None) -> Segmenter:
    """``model`` as a :class:`Segmenter` run with ``options`` (default: ``InferenceOptions()``).

    Dispatch: a :class:`Segmenter` is returned as it is (``options`` are then ignored); a checkpoint with
    ``options.backend="onnxruntime"`` or ``options.int8`` runs through ONNX Runtime (see
    :func:`unetkit.quantize.load_with_backend`); an exported ``.onnx`` file runs with ONNX Runtime
    (:func:`~unetkit.inference.onnx_backend.load_onnx`; ``tile=None`` takes the file's recommended tile);
    any other file is a checkpoint run by PyTorch (:meth:`Segmenter.from_checkpoint`).

    Several models (a list, or a string of comma-separated files that is not itself a file) and ensemble
    folders or their ``ensemble.yaml`` (see :func:`model_sources`) load each member as above and give one
    Segmenter averaging their class probabilities (:func:`~unetkit.inference.ensemble.ensemble_segmenter`;
    its ``meta["ensemble"]`` lists the member files). A single model loads exactly as it is.

    Raises:
        UnetkitError: A missing or unreadable file, or options the backend cannot honour; a file that is no
            unetkit model (a folder, a TorchScript module, a pickle that would run code); or one whose metadata
            or weights would make every mask garbage (zero or non-finite normalisation, NaN weights, classes the
            network does not have, ONNX metadata that disagrees with its graph). Each names the file.

    Example:
        >>> seg = load_segmenter("runs/exp1/best.pt", InferenceOptions(device="cpu", tile=256))  # doctest: +SKIP
        >>> mask = seg.predict_mask(image)  # doctest: +SKIP
    """
    if isinstance(model, Segmenter):
        return model
    options = options or InferenceOptions()
    loaded: list[tuple[str, Segmenter]] = []
    for source in _items(model):
        manifest = manifest_path(source) if not isinstance(source, Segmenter) else None
        if manifest is None:
            loaded.append((_name(source, len(loaded)), _load_one(source, options)))
        else:
            loaded += _load_manifest(read_manifest(manifest), options)
    if len(loaded) == 1:
        return loaded[0][1]
    return ensemble_segmenter([seg for _, seg in loaded], [name for name, _ in loaded])


def _load_one(model: str | Path | Segmenter, options: InferenceOptions) -> Segmenter:
    """One model file (or a Segmenter, as it is) with ``options``, dispatched to its backend."""
    if isinstance(model, Segmenter):
        return model
    if options.backend != "torch" or options.int8:
        return load_with_backend(model, options)
    if Path(model).suffix.lower() == ".onnx":
        return load_onnx(model, options)
    return Segmenter.from_checkpoint(model, options)


def _load_manifest(manifest: Manifest, options: InferenceOptions) -> list[tuple[str, Segmenter]]:
    members = [(str(path), _load_one(path, options)) for path in manifest.members]
    for _, seg in members:
        check_manifest_classes(manifest, seg)
    return members


def _name(source: str | Path | Segmenter, index: int) -> str:
    return f"model {index + 1}" if isinstance(source, Segmenter) else str(source)


def _items(model: Models) -> list[Model]:
    """The models ``model`` names: the items of a list; the comma-separated parts of a string that is not a file
    or folder (``"a.pt,b.pt"``); else ``model`` itself."""
    if isinstance(model, (list, tuple)):
        if not model:
            raise UnetkitError("no model given: pass a checkpoint, an .onnx file, several of them, or an ensemble folder")
        return list(model)
    if isinstance(model, str) and "," in model and not Path(model).exists():
        return [part.strip() for part in model.split(",") if part.strip()]
    return [model]


def model_sources(model: Models) -> list[Path]:
    """The files that loading ``model`` reads: each model file, and for ensembles their ``ensemble.yaml`` and
    members; outputs must never replace them. Unreadable ensemble files are left to :func:`load_segmenter`."""
    files: list[Path] = []
    for source in _items(model) if not isinstance(model, Segmenter) else []:
        if isinstance(source, Segmenter):
            continue
        try:
            manifest = manifest_path(source)
            files += [Path(source)] if manifest is None else [manifest, *read_manifest(manifest).members]
        except UnetkitError:
            files.append(Path(source))
    return files
