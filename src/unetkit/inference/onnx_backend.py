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
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import torch

from unetkit.errors import UnetkitError
from unetkit.extras import optional
from unetkit.inference.options import InferenceOptions
from unetkit.inference.predictor import Segmenter, check_meta
from unetkit.models.config import ModelConfig, context, input_size_for_output

#: The metadata key of ONNX files and the extra file of TorchScript ones.
META_KEY = "unetkit"
#: Version of the exported layout (input/output names, metadata keys); readers refuse newer ones.
EXPORT_VERSION = 1
#: Names of the exported graph's input (normalised (N, C, H, W) float32) and output ((N, K, H', W') logits).
INPUT, OUTPUT = "image", "logits"
REEXPORT = "the file is damaged or was edited; export the checkpoint again with unetkit export"


def _onnxruntime():
    return optional("onnxruntime", "running an .onnx model needs onnxruntime", "onnx")


def _default_threads() -> int:
    """The threads PyTorch would use here (it honours OMP_NUM_THREADS and ``--threads``)."""
    return max(1, torch.get_num_threads())


class OnnxForward:
    """An exported U-Net as a tile function: (B, C, h, w) normalised float32 -> (B, K, h', w') float32 logits.

    The file is checked before it is used (:func:`check_onnx`): its metadata must be complete and agree with
    the graph, and its weights must be finite.

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
        if path.is_dir():
            raise UnetkitError(f"{path}: a folder, not an ONNX model; pass the .onnx file that unetkit export wrote")
        if not path.is_file():
            raise UnetkitError(f"{path}: ONNX model not found; write one with unetkit export --model best.pt --out {path.name}")
        if zipfile.is_zipfile(path):
            raise UnetkitError(f"{path}: a PyTorch file (a zip archive), not an ONNX model; rename a checkpoint to .pt, or export it "
                               f"with unetkit export --model best.pt --out {path.name}")  # fmt: skip
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or _default_threads()
        options.inter_op_num_threads = 1
        # Spinning threads burn a core each between requests; a server is mostly idle between them.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        data = path.read_bytes()
        try:
            self.session = ort.InferenceSession(data, options, providers=_providers(ort, device))
        except UnetkitError:
            raise
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidProtobuf/... types
            raise UnetkitError(f"{path}: not a readable ONNX model ({_reason(e)}); export it again with unetkit export") from None
        self.meta, self.config = check_onnx(self.session, data, path)
        self.input_name = self.meta["export"]["input"]
        self.device = device

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def _reason(error: BaseException) -> str:
    text = str(error).strip()
    return textwrap.shorten(text.splitlines()[0], 160, placeholder=" ...") if text else type(error).__name__


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
    """The ``unetkit`` metadata of an ONNX Runtime session: a JSON mapping of a layout this unetkit reads."""
    props = session.get_modelmeta().custom_metadata_map
    if META_KEY not in props:
        raise UnetkitError(f"{path}: an ONNX model without unetkit metadata; export the checkpoint with unetkit export")
    try:
        meta = json.loads(props[META_KEY])
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or not isinstance(meta.get("export"), dict):
        raise UnetkitError(f"{path}: its unetkit metadata is not a JSON mapping with an 'export' entry; {REEXPORT}")
    version = meta["export"].get("version", 0)
    if not isinstance(version, int) or version > EXPORT_VERSION:
        raise UnetkitError(f"{path}: exported in layout {version}, newer than this unetkit reads ({EXPORT_VERSION}); upgrade unetkit")
    return meta


def check_onnx(session, data: bytes, path: Path) -> tuple[dict, ModelConfig]:
    """The metadata and network configuration of an exported file, checked against each other and the graph.

    Checks: the metadata (model configuration, normalisation, classes, colours, tile, input name); finite
    weights; the graph's one float input of rank 4 with the metadata's name and channels; its output's
    classes; and a run on the smallest valid input giving the size the configuration says.

    Raises:
        UnetkitError: naming ``path`` and the first disagreement.
    """
    meta = read_meta(session, path)
    try:
        config = ModelConfig.from_dict(meta.get("model"))
    except (TypeError, ValueError, AttributeError) as error:
        raise UnetkitError(f"{path}: its model metadata is not a U-Net configuration ({error}); {REEXPORT}") from None
    check_meta(meta, config, str(path))
    tile = meta.get("tile")
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
        raise UnetkitError(f"{path}: its recommended tile {tile!r} is not a positive number of pixels; {REEXPORT}")
    _check_weights(data, path)
    _check_graph(session, meta, config, path)
    return meta, config


def _check_graph(session, meta: dict, config: ModelConfig, path: Path) -> None:
    """The graph's input and output against the metadata, then one run on the smallest valid input."""
    inputs, outputs, name = session.get_inputs(), session.get_outputs(), meta["export"].get("input")
    if len(inputs) != 1 or inputs[0].name != name:
        raise UnetkitError(f"{path}: its graph's inputs {[i.name for i in inputs]} are not the one input {name!r} its metadata names; {REEXPORT}")
    for what, arg, count in (("input channels", inputs[0], config.in_channels), ("output classes", outputs[0], config.num_classes)):
        shape = arg.shape
        if arg.type != "tensor(float)" or len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != count):
            raise UnetkitError(f"{path}: its graph's {arg.name} is {arg.type} {shape}, but its metadata says (N, {count}, H, W) "
                               f"float for {count} {what}; {REEXPORT}")  # fmt: skip
    size = input_size_for_output(1, config.depth, config.padding)  # the smallest input the metadata's geometry accepts
    x = np.zeros((1, config.in_channels, size, size), np.float32)
    quiet = _onnxruntime().RunOptions()
    quiet.log_severity_level = 4  # the failure is reported below in one line; ONNX Runtime would log it as well
    try:
        y = session.run(None, {name: x}, quiet)[0]
    except Exception as e:  # noqa: BLE001 - onnxruntime's own errors: the graph is not the network described
        raise UnetkitError(f"{path}: its graph does not run on a {x.shape} input as its metadata describes ({_reason(e)}); {REEXPORT}") from None
    out = size - context(config.depth, config.padding)
    if y.shape != (1, config.num_classes, out, out):
        raise UnetkitError(f"{path}: its graph maps a {x.shape} input to {y.shape}, but its metadata says "
                           f"{(1, config.num_classes, out, out)}; {REEXPORT}")  # fmt: skip
    if not np.isfinite(y).all():
        raise UnetkitError(f"{path}: its graph returns NaN or infinite logits for a blank input; {REEXPORT}")


def _check_weights(data: bytes, path: Path) -> None:
    """Refuse an exported graph whose float weights (initializers) hold NaN or infinity, naming the first."""
    onnx = optional("onnx", "checking an .onnx model needs onnx", "onnx")
    from onnx import numpy_helper

    for tensor in onnx.load_from_string(data).graph.initializer:
        array = numpy_helper.to_array(tensor)
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise UnetkitError(f"{path}: its weights {tensor.name} hold NaN or infinite values, so every prediction would be NaN; "
                               "export a checkpoint whose training did not diverge")  # fmt: skip


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
