"""Export a trained U-Net to ONNX (or TorchScript) together with everything prediction needs.

An exported file is self-describing: its metadata holds the checkpoint's metadata (model
configuration, normalisation, class names and colours, training configuration) plus the geometry
of valid input sizes and the recommended tile size, so ``unetkit predict --model model.onnx`` and a
program with only ``onnxruntime`` and ``numpy`` (docs/deploy.md) reproduce the PyTorch predictions.

ONNX files carry it as the JSON string ``metadata_props["unetkit"]``; TorchScript files as the extra
file ``unetkit.json``. Input ``image`` is (batch, C, height, width) float32, already normalised;
output ``logits`` is (batch, K, height - context, width - context); all three sizes are dynamic.

The graph is :meth:`UNet.forward <unetkit.models.unet.UNet.forward>` itself, traced with PyTorch's
TorchScript-based ONNX exporter (``dynamo=False``): its skip crops are constant margins, so the trace
keeps every size symbolic. The ``torch.export``-based exporter also works on this network, but takes
5-25 s for a tiny model where this takes 0.2 s, and names the output sizes ``8*s56 - 92``; both agree
with PyTorch to ~1e-5.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from unetkit.data.io import atomic_write
from unetkit.engine.checkpoint import load_checkpoint
from unetkit.commands import EXPORT_FORMATS
from unetkit.errors import UnetkitError
from unetkit.inference.onnx_backend import EXPORT_VERSION, INPUT, META_KEY, OUTPUT
from unetkit.inference.predictor import Segmenter, check_meta
from unetkit.inference.tiling import largest_valid_at_most
from unetkit.models.config import ModelConfig, context, input_size_for_output, stride
from unetkit.models.unet import UNet, build_model, unet_from_weights
from unetkit.version import __version__

OPSET = 17


def geometry(config: ModelConfig) -> dict:
    """Which input sizes the network accepts and what it returns, as plain numbers.

    Valid input sizes are ``min_input_size + k * stride`` for k >= 0; the output is ``context``
    pixels smaller along each axis (0 in same mode). A reader pads an image by mirroring, ``context //
    2`` pixels before it, up to the next valid size, and crops the output to the image's size.

    Example:
        >>> geometry(ModelConfig(depth=5))
        {'padding': 'valid', 'depth': 5, 'stride': 16, 'context': 184, 'min_input_size': 188}
    """
    return {
        "padding": config.padding,
        "depth": config.depth,
        "stride": stride(config.depth),
        "context": context(config.depth, config.padding),
        "min_input_size": input_size_for_output(1, config.depth, config.padding),
    }


def export_meta(meta: dict, config: ModelConfig, tile: int) -> dict:
    """The checkpoint's metadata plus the geometry, the recommended tile and the exporting version."""
    return {
        **meta,
        "model": config.to_dict(),
        "geometry": geometry(config),
        "tile": largest_valid_at_most(tile, config.depth, config.padding),
        "export": {"version": EXPORT_VERSION, "unetkit_version": __version__, "input": INPUT, "output": OUTPUT},
    }


def _torch_model(model: str | Path | Segmenter) -> tuple[UNet, dict]:
    """(module on the CPU in fp32, metadata) of a checkpoint or a PyTorch Segmenter."""
    if isinstance(model, Segmenter):
        if model.model is None:
            raise UnetkitError("this Segmenter has no PyTorch model (it is already an exported one); export its checkpoint")
        net = build_model(model.config)
        net.load_state_dict(model.model.state_dict())
        return net.eval(), dict(model.meta)
    path = Path(model)
    if path.suffix.lower() == ".onnx":
        raise UnetkitError(f"{path}: already an ONNX model; export the checkpoint it came from (a run's best.pt)")
    ckpt = load_checkpoint(path)
    if "model" not in ckpt["meta"]:
        raise UnetkitError(f"{path}: its metadata lacks model, which export needs; the file is damaged or was edited; re-train or re-copy it")
    net = unet_from_weights(ckpt["meta"]["model"], ckpt["model"], str(path))
    check_meta(ckpt["meta"], net.config, str(path))  # an exported file must be one that prediction accepts
    return net.eval(), ckpt["meta"]


def _example(config: ModelConfig, batch: int, extra: int = 0) -> torch.Tensor:
    """A random normalised (batch, C, s, s + extra) input of valid sizes with two strides of output."""
    s = input_size_for_output(2 * stride(config.depth), config.depth, config.padding)
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, config.in_channels, s, s + extra * stride(config.depth), generator=g)


def _check_parity(name: str, reference: torch.Tensor, got: np.ndarray, out: Path) -> float:
    """Max absolute difference between PyTorch and exported logits; refuses an export that disagrees."""
    if got.shape != tuple(reference.shape):
        raise UnetkitError(f"{out}: the exported graph returned shape {got.shape}, PyTorch {tuple(reference.shape)}; please report this bug")
    diff = float(np.abs(got - reference.numpy()).max())
    scale = max(1.0, float(reference.abs().max()))
    if not diff <= 1e-4 * scale:
        raise UnetkitError(f"{out}: the exported {name} differs from PyTorch by {diff:.3g} in the logits; please report this bug")
    return diff


def export_model(model: str | Path | Segmenter, out: str | Path, format: str, tile: int) -> Path:
    """Write a trained U-Net as an ONNX graph (or TorchScript module) with its metadata, atomically.

    The batch, height and width of the input are dynamic (any valid size, see :func:`geometry`). The
    file is checked before it replaces ``out``: it must reproduce the PyTorch logits on a random input
    of another size than the one traced, to 1e-4 (relative to the largest logit when that exceeds 1).

    Args:
        model: A checkpoint (a run's ``best.pt``/``last.pt``) or a :class:`Segmenter` with a PyTorch model.
        out: The file to write: ``.onnx`` for ``format="onnx"``; any other name (e.g. ``.torchscript``)
            for ``format="torchscript"``. An existing file is replaced.
        format: ``"onnx"`` or ``"torchscript"``.
        tile: Recommended input tile size stored in the file (rounded down to a valid size; default 512).

    Returns:
        ``out``.

    Example:
        >>> export_model("runs/exp1/best.pt", "model.onnx", "onnx", 512)  # doctest: +SKIP
        PosixPath('model.onnx')
    """
    out = Path(out)
    if format not in EXPORT_FORMATS:
        raise UnetkitError(f"format={format!r} is not one of {', '.join(EXPORT_FORMATS)}")
    if (format == "onnx") != (out.suffix.lower() == ".onnx"):
        want = "end in .onnx" if format == "onnx" else "not end in .onnx (use e.g. model.torchscript)"
        raise UnetkitError(f"--out {out}: a {format} file should {want}; unetkit tells models apart by that suffix")
    if tile < 1:
        raise UnetkitError(f"tile must be >= 1 pixel, got {tile}")
    net, meta = _torch_model(model)
    meta = export_meta(meta, net.config, tile)
    example, check = _example(net.config, 1), _example(net.config, 2, extra=1)
    with torch.no_grad():
        reference = net(check)  # (2, K, h, w) in eager mode, on another size than the traced one
    if format == "onnx":
        _export_onnx(net, example, check, reference, meta, out)
    else:
        _export_torchscript(net, example, check, reference, meta, out)
    return out


def _export_onnx(module: UNet, example: torch.Tensor, check: torch.Tensor, reference: torch.Tensor, meta: dict, out: Path) -> None:
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        raise UnetkitError("ONNX export needs onnx and onnxruntime: pip install 'unetkit[onnx]'") from None
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)  # dynamo=False on purpose, see the module docstring
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # torch's norm layers check sizes in Python; the parity check covers them
        warnings.filterwarnings("ignore", "ONNX export mode is set to TrainingMode.EVAL")  # instance norm always uses the input's statistics
        torch.onnx.export(
            module, (example,), buffer, dynamo=False, opset_version=OPSET, input_names=[INPUT], output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch", 2: "height", 3: "width"}, OUTPUT: {0: "batch", 2: "out_height", 3: "out_width"}},
        )  # fmt: skip
    graph = onnx.load_from_string(buffer.getvalue())
    graph.producer_name, graph.producer_version = "unetkit", __version__
    graph.doc_string = "U-Net exported by unetkit: input 'image' (N, C, H, W) float32 normalised with metadata 'unetkit'.normalization; output 'logits' (N, K, H', W')."
    onnx.helper.set_model_props(graph, {META_KEY: json.dumps(meta), "unetkit_version": __version__})
    onnx.checker.check_model(graph)
    data = graph.SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    _check_parity("ONNX graph", reference, session.run(None, {INPUT: check.numpy()})[0], out)
    with atomic_write(out) as tmp:
        tmp.write_bytes(data)


def _export_torchscript(module: UNet, example: torch.Tensor, check: torch.Tensor, reference: torch.Tensor, meta: dict, out: Path) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated but TorchScript is what C++ and Java load
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(module, example)
        _check_parity("TorchScript module", reference, traced(check).numpy(), out)
        with atomic_write(out) as tmp:
            torch.jit.save(traced, str(tmp), _extra_files={f"{META_KEY}.json": json.dumps(meta)})
