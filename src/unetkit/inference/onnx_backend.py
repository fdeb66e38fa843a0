"""Exported models (``unetkit export``) run with ONNX Runtime, behind the same tile function as PyTorch.

Only the forward differs: :class:`OnnxForward` maps (B, C, h, w) normalised float32 tiles to
(B, K, h', w') logits like ``TorchForward``, and its ``config`` is rebuilt from the file's metadata,
so tiling, normalisation and every output of ``unetkit predict`` are shared code.

This module owns the layout of exported files that it reads (the metadata key, the layout version, the
input and output names); :mod:`unetkit.exporting` writes them from here.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from unetkit.errors import UnetkitError
from unetkit.extras import optional
from unetkit.inference.options import InferenceOptions
from unetkit.inference.predictor import Segmenter
from unetkit.models.config import ModelConfig

#: The metadata key of ONNX files and the extra file of TorchScript ones.
META_KEY = "unetkit"
#: Version of the exported layout (input/output names, metadata keys); readers refuse newer ones.
EXPORT_VERSION = 1
#: Names of the exported graph's input (normalised (N, C, H, W) float32) and output ((N, K, H', W') logits).
INPUT, OUTPUT = "image", "logits"


def _onnxruntime():
    return optional("onnxruntime", "running an .onnx model needs onnxruntime", "onnx")


def _default_threads() -> int:
    """The threads PyTorch would use here (it honours OMP_NUM_THREADS and ``--threads``)."""
    return max(1, torch.get_num_threads())


class OnnxForward:
    """An exported U-Net as a tile function: (B, C, h, w) normalised float32 -> (B, K, h', w') float32 logits.

    Args:
        path: An ``.onnx`` file written by :func:`unetkit.exporting.export_model`.
        device: ``"auto"`` or ``"cpu"`` (the CPU provider), or ``"cuda"``/``"cuda:N"`` when the installed
            ONNX Runtime has the CUDA provider.
        threads: Intra-op threads (default: as many as PyTorch uses, i.e. the physical cores or
            ``OMP_NUM_THREADS``). One session serves concurrent calls; ONNX Runtime runs them safely.

    Attributes:
        meta: The exported metadata (normalisation, classes, colours, geometry, tile, ...).
        config: The :class:`ModelConfig` of the exported network.
    """

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None) -> None:
        ort = _onnxruntime()
        path = Path(path)
        if not path.is_file():
            raise UnetkitError(f"{path}: ONNX model not found; write one with unetkit export --model best.pt --out {path.name}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or _default_threads()
        options.inter_op_num_threads = 1
        # Spinning threads burn a core each between requests; a server is mostly idle between them.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=_providers(ort, device))
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
            reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise UnetkitError(f"{path}: not a readable ONNX model ({reason}); export it again with unetkit export") from None
        self.meta = read_meta(self.session, path)
        self.config = ModelConfig.from_dict(self.meta["model"])
        self.input_name = self.meta["export"]["input"]
        self.device = device

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def _providers(ort, device: str) -> list[str]:
    if device in ("auto", "cpu"):
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise UnetkitError(f"device={device!r} but this onnxruntime has no CUDA provider; use --device cpu or install onnxruntime-gpu")
        index = device.partition(":")[2] or "0"
        return [("CUDAExecutionProvider", {"device_id": int(index)}), "CPUExecutionProvider"]
    raise UnetkitError(f"device={device!r} is not a device for ONNX Runtime; use auto, cpu, cuda or cuda:N")


def read_meta(session, path: str | Path) -> dict:
    """The ``unetkit`` metadata of an ONNX Runtime session, checked."""
    props = session.get_modelmeta().custom_metadata_map
    if META_KEY not in props:
        raise UnetkitError(f"{path}: an ONNX model without unetkit metadata; export the checkpoint with unetkit export")
    meta = json.loads(props[META_KEY])
    version = meta.get("export", {}).get("version", 0)
    if version > EXPORT_VERSION:
        raise UnetkitError(f"{path}: exported in layout {version}, newer than this unetkit reads ({EXPORT_VERSION}); upgrade unetkit")
    return meta


def load_onnx(path: str | Path, options: InferenceOptions | None = None, progress: bool = False) -> Segmenter:
    """Load an exported ``.onnx`` model as a :class:`~unetkit.inference.predictor.Segmenter`.

    Args:
        path: The file ``unetkit export`` wrote.
        options: ``device`` as for :class:`OnnxForward`; ``tile`` None for the one recommended in the
            file; ``precision`` ``"auto"`` or ``"fp32"`` (an exported graph computes in fp32). The
            Segmenter holds them resolved, with ``backend="onnxruntime"``.
        progress: Show a bar of the tiles of each image.

    Example:
        >>> seg = load_onnx("model.onnx")  # doctest: +SKIP
        >>> mask = seg.predict_mask(image)  # (H, W) class indices, as with the checkpoint
    """
    options = options or InferenceOptions()
    if options.precision not in ("auto", "fp32"):
        raise UnetkitError(f"precision={options.precision!r}: an exported ONNX model computes in fp32; use --precision auto or fp32")
    forward = OnnxForward(path, options.device)
    resolved = dataclasses.replace(options, tile=options.tile or forward.meta["tile"], precision="fp32", backend="onnxruntime")
    return Segmenter(forward, forward.meta, resolved, progress)
