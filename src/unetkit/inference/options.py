"""How a trained model is run: the options a :class:`~unetkit.inference.predictor.Segmenter` holds, and those
that turn probabilities into objects. Declared once here for ``load``, ``predict``, ``evaluate`` and ``serve``
(and their flags); no torch, so the CLI can read them without loading the network.
"""

from __future__ import annotations

from dataclasses import dataclass

from unetkit.options import PRECISIONS, Options, opt

DEFAULT_TILE = 512
DEFAULT_BATCH = 4  # tiles per forward pass
NODATA_CLASS = 255  # class written where a GeoTIFF has no data
BACKENDS = ("torch", "onnxruntime")


@dataclass(kw_only=True)
class InferenceOptions(Options):
    """How a model runs: tiles, batch, device, arithmetic and backend (``unetkit.load`` and every command that predicts)."""

    tile: int | None = opt(DEFAULT_TILE, "input tile size in pixels (None: an exported model's recommended tile)", low=1)
    batch_size: int = opt(DEFAULT_BATCH, "tiles per forward pass", low=1)
    device: str = opt("auto", "auto (cuda if available), cpu, cuda or cuda:N")
    precision: str = opt("auto", "arithmetic of a checkpoint; auto = bf16 where it measurably beats fp32 on this hardware, "
                         "else fp32; .onnx models compute in fp32", ("auto", *PRECISIONS))
    backend: str = opt("torch", "run a checkpoint with PyTorch, or export it (cached) and run it with ONNX Runtime", BACKENDS)
    int8: bool = opt(False, "ONNX Runtime with static int8 quantisation, calibrated on training images; "
                     "refused when it loses more than 0.005 mean Dice against fp32 on them")
    calibration: str | None = opt(None, "--int8 calibration images with masks (default: the checkpoint's training data)", metavar="DATA")
    tta: bool = opt(False, "test-time augmentation: average the probabilities of the 8 flips and 90-degree rotations of each tile "
                    "(the image and its left-right flip for models trained with --hflip only); 8x (or 2x) the compute")


SEED_THRESHOLD = 0.7  # interior probability above which a pixel seeds an object
MIN_SIZE = 16  # objects with fewer pixels are removed (the smallest DSB 2018 nucleus has 21)


@dataclass(kw_only=True)
class InstanceOptions(Options):
    """Objects from probabilities: ``predict --instances`` and ``evaluate --instances`` (see :mod:`unetkit.instances`)."""

    instances: bool = opt(False, "also give objects: predict writes NAME_instances.tif (uint16 object labels) and NAME_objects.csv; "
                          "evaluate adds the object metrics (AP at IoU 0.50..0.95, aggregated Jaccard, splits and merges). "
                          "Touching objects are split for models trained with --target instances")
    min_size: int = opt(MIN_SIZE, "with --instances: remove objects of fewer pixels", low=0)
    seed_threshold: float = opt(SEED_THRESHOLD, "with --instances: interior probability above which pixels seed the watershed", low=0, high=1)
    fill_holes: bool = opt(True, "with --instances: fill holes inside objects")
