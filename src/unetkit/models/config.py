"""The U-Net's configuration and its geometry as plain numbers: no torch, so options, tiling and the CLI
can use them without loading the network.

``padding="valid"`` is the paper's unpadded network: the output is smaller than the input (572 -> 388
for the paper's depth 5) and every output pixel sees its full context; ``padding="same"`` pads the
convolutions so the output has the input's size.

An ``encoder`` network (:mod:`unetkit.models.encoder_unet`) has torchvision's ResNet or MobileNetV2 as its
contracting path: five down-samplings (stride 32), so its geometry is that of a same-padded depth-6 U-Net,
and every geometry function below answers for it through ``depth`` and ``padding``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

PADDINGS = ("valid", "same")
NORMS = ("none", "batch", "group", "instance")
UP_MODES = ("transposed", "bilinear")
ENCODERS = ("none", "resnet18", "resnet34", "mobilenet_v2")
ENCODER_DEPTH = 6  # an encoder halves the size five times (stride 32): the geometry of a depth-6 U-Net


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a U-Net; stored in every checkpoint.

    Attributes:
        in_channels: Input channels (1 gray, 3 RGB, any number of bands).
        num_classes: Output logits per pixel (2 for binary, as in the paper's softmax).
        base_channels: Feature maps at the first level; doubled at each level below (paper: 64).
        depth: Number of levels, i.e. ``depth - 1`` poolings (paper: 5).
        padding: ``"valid"`` (paper, unpadded) or ``"same"`` (padded, output size = input size).
        norm: ``"none"`` (paper), ``"batch"``, ``"group"`` or ``"instance"`` after each conv.
        dropout: Drop probability at the end of the contracting path (paper uses dropout there; 0 = off).
        up_mode: ``"transposed"`` (paper's 2x2 up-conv) or ``"bilinear"`` (upsample + 1x1 conv).
        encoder: ``"none"`` (the U-Net's own contracting path) or a torchvision classifier without its head
            (``"resnet18"``, ``"resnet34"``, ``"mobilenet_v2"``) under a U-Net decoder; then ``padding`` must be
            ``"same"`` and ``depth`` 6, and ``base_channels`` is the decoder's last width (16: 256, 128, 64, 32, 16).
    """

    in_channels: int = 1
    num_classes: int = 2
    base_channels: int = 64
    depth: int = 5
    padding: str = "valid"
    norm: str = "none"
    dropout: float = 0.0
    up_mode: str = "transposed"
    encoder: str = "none"

    def __post_init__(self) -> None:
        if self.padding not in PADDINGS:
            raise ValueError(f"padding={self.padding!r}; expected one of {PADDINGS}")
        if self.norm not in NORMS:
            raise ValueError(f"norm={self.norm!r}; expected one of {NORMS}")
        if self.up_mode not in UP_MODES:
            raise ValueError(f"up_mode={self.up_mode!r}; expected one of {UP_MODES}")
        for name in ("in_channels", "num_classes", "base_channels", "depth"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder={self.encoder!r}; expected one of {ENCODERS}")
        if self.encoder != "none" and (self.padding, self.depth) != ("same", ENCODER_DEPTH):
            raise ValueError(f"encoder={self.encoder!r} needs padding='same' and depth={ENCODER_DEPTH}, got {self.padding!r} and {self.depth}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in d.items() if k in names}
        for name in ("in_channels", "num_classes", "base_channels", "depth"):
            if name in values and (isinstance(values[name], bool) or not isinstance(values[name], int)):
                raise ValueError(f"{name} must be an integer, got {values[name]!r}")
        return cls(**values)


# --- valid-mode geometry -----------------------------------------------------------------------
# With L = depth - 1 poolings and b the size at the bottom after its two convs, an input size is
# valid iff it equals 2^L * b + 4 * (2^(L+1) - 1) and the output is 2^L * b - 4 * (2^L - 1).
# For the paper (L = 4): input 16 b + 124, output 16 b - 60; b = 28 gives 572 -> 388.


def _context(depth: int) -> int:
    levels = 2 ** (depth - 1)
    return 4 * (2 * levels - 1) + 4 * (levels - 1)


def context(depth: int, padding: str) -> int:
    """Pixels lost across each axis: input size - output size (184 for the paper, 0 for same)."""
    return _context(depth) if padding == "valid" else 0


def stride(depth: int) -> int:
    """Total down-sampling factor 2^(depth - 1): tiles must start on multiples of it."""
    return 2 ** (depth - 1)


def output_size(input_size: int, depth: int = 5, padding: str = "valid") -> int:
    """Output size of the network for one axis of ``input_size``; ValueError if not a valid size."""
    check_input_size((input_size,), depth, padding)
    return input_size - context(depth, padding)


def is_valid_input_size(size: int, depth: int = 5, padding: str = "valid") -> bool:
    s = stride(depth)
    if padding == "same":
        return size >= s and size % s == 0
    rest = size - 4 * (2 * s - 1)
    return rest % s == 0 and size - context(depth, padding) >= 1


def input_size_for_output(out: int, depth: int = 5, padding: str = "valid") -> int:
    """Smallest valid input size whose output is at least ``out`` pixels."""
    s = stride(depth)
    size = max(out, 1) + context(depth, padding)
    size = max(size, s)
    while not is_valid_input_size(size, depth, padding):
        size += 1
    return size


def nearest_valid_input_sizes(size: int, depth: int = 5, padding: str = "valid") -> tuple[int | None, int]:
    """The valid input sizes just below (None if none) and at or above ``size``."""
    above = size
    while not is_valid_input_size(above, depth, padding):
        above += 1
    below = size - 1
    while below > 0 and not is_valid_input_size(below, depth, padding):
        below -= 1
    return (below if below > 0 else None), above


def check_input_size(hw: tuple[int, ...], depth: int, padding: str) -> None:
    """Raise ValueError naming the nearest valid sizes if any of ``hw`` is not a valid input size."""
    for size in hw:
        if not is_valid_input_size(int(size), depth, padding):
            below, above = nearest_valid_input_sizes(int(size), depth, padding)
            near = f"{below} or {above}" if below else f"{above}"
            raise ValueError(
                f"input size {size} is not valid for a depth-{depth} U-Net with padding={padding!r}; "
                f"nearest valid sizes: {near} (use unetkit's tiled predict for arbitrary image sizes)"
            )
