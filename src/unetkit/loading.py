"""The one loader of trained models: a checkpoint or an exported file -> a :class:`Segmenter` ready to predict.

It sits above the export layer because a checkpoint may run through ONNX Runtime (exported on the fly,
cached) or int8 quantisation (:mod:`unetkit.quantize`); the prediction code below it knows nothing of
either and takes any :class:`~unetkit.inference.predictor.Segmenter`.
"""

from __future__ import annotations

from pathlib import Path

from unetkit.inference.onnx_backend import load_onnx
from unetkit.inference.options import InferenceOptions
from unetkit.inference.predictor import Segmenter
from unetkit.quantize import load_with_backend


def load_segmenter(model: str | Path | Segmenter, options: InferenceOptions | None = None) -> Segmenter:
    """``model`` as a :class:`Segmenter` run with ``options`` (default: ``InferenceOptions()``).

    Dispatch: a :class:`Segmenter` is returned as it is (``options`` are then ignored); a checkpoint with
    ``options.backend="onnxruntime"`` or ``options.int8`` runs through ONNX Runtime (see
    :func:`unetkit.quantize.load_with_backend`); an exported ``.onnx`` file runs with ONNX Runtime
    (:func:`~unetkit.inference.onnx_backend.load_onnx`; ``tile=None`` takes the file's recommended tile);
    any other file is a checkpoint run by PyTorch (:meth:`Segmenter.from_checkpoint`).

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
    if options.backend != "torch" or options.int8:
        return load_with_backend(model, options)
    if Path(model).suffix.lower() == ".onnx":
        return load_onnx(model, options)
    return Segmenter.from_checkpoint(model, options)
