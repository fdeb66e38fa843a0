"""The 3D U-Net of Cicek et al. (MICCAI 2016) for volumes, with nnU-Net's handling of anisotropic voxels.

The 2D network (:mod:`unetkit.models.unet`) in three dimensions: per level two conv-norm-ReLU, max-pooling
between levels with the channels doubling, up-sampling by the pooling factor halving them, concatenation
of the (centre-cropped) skip, two more convs, and a 1x1x1 conv to ``num_classes`` logits.

Anisotropic volumes (an EM stack of 4 x 4 x 50 nm voxels, an MRI with 5 mm slices) get per-level pooling
factors and kernel sizes (Isensee et al. 2021, nnU-Net): a level pools only the axes whose spacing is
close to the finest, and convolves 1 x 3 x 3 while the slices are far apart. :func:`plan_anisotropy`
derives both from the voxel spacing. Axes are always ordered (z, y, x), as the tensors (N, C, Z, Y, X).

``padding="valid"`` is the unpadded network: each 3-wide kernel axis trims 4 voxels per level, the
output is smaller than the input by :func:`context3d`, and :func:`tiled_forward_valid` on a mirrored
volume equals one pass over the whole volume. ``padding="same"`` keeps the input size.

Example:
    >>> cfg = Model3DConfig(base_channels=4, depth=3, padding="same", norm="none")
    >>> UNet3D(cfg)(torch.zeros(1, 1, 8, 16, 20)).shape
    torch.Size([1, 2, 8, 16, 20])
"""

from __future__ import annotations

import difflib
import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from unetkit.errors import UnetkitError

_PADDINGS = ("valid", "same")
_NORMS = ("none", "batch", "instance")
_UP_MODES = ("transposed", "trilinear")
_AXES = ("z", "y", "x")
_PLAN_HINT = "or derive pools and kernels from the voxel spacing with plan_anisotropy(spacing, depth)"

Triple = tuple[int, int, int]


@dataclass(frozen=True)
class Model3DConfig:
    """Everything needed to rebuild a 3D U-Net; JSON-safe through :meth:`to_dict`.

    Attributes:
        in_channels: Input channels per voxel (1 for a grey-value volume).
        num_classes: Output logits per voxel.
        base_channels: Feature maps at the first level, doubled at each level below (default 32, as the paper's
            first conv; the paper's in-level doubling is not copied: levels have 32, 64, 128, ... maps).
        depth: Number of levels, i.e. ``depth - 1`` poolings (paper: 4).
        padding: ``"valid"`` (paper, unpadded) or ``"same"`` (padded, output size = input size).
        norm: ``"batch"`` (paper), ``"instance"`` (nnU-Net) or ``"none"`` after each conv.
        up_mode: ``"transposed"`` (paper's up-conv, kernel = stride = the level's pool) or ``"trilinear"``
            (upsampling + 1x1x1 conv).
        dropout: Drop probability at the end of the contracting path (0 = off).
        pools: ``depth - 1`` pooling factors (pz, py, px), each 1 or 2, shallowest first; None: 2x2x2 everywhere.
        kernels: ``depth`` kernel sizes (kz, ky, kx), each 1 or 3, shallowest first; the up path of a level uses
            the level's kernel. None: 3x3x3 everywhere.
    """

    in_channels: int = 1
    num_classes: int = 2
    base_channels: int = 32
    depth: int = 4
    padding: str = "valid"
    norm: str = "batch"
    up_mode: str = "transposed"
    dropout: float = 0.0
    pools: tuple[Triple, ...] | None = None
    kernels: tuple[Triple, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("in_channels", "num_classes", "base_channels", "depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UnetkitError(f"{name}={value!r} is not a 3D U-Net setting; use a whole number >= 1")
        _check_choice("padding", self.padding, _PADDINGS)
        _check_choice("norm", self.norm, _NORMS)
        _check_choice("up_mode", self.up_mode, _UP_MODES)
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise UnetkitError(f"dropout={self.dropout!r} is not a 3D U-Net setting; use a probability in [0, 1), 0 for none")
        pools = ((2, 2, 2),) * (self.depth - 1) if self.pools is None else self.pools
        kernels = ((3, 3, 3),) * self.depth if self.kernels is None else self.kernels
        object.__setattr__(self, "pools", _check_levels("pools", pools, self.depth - 1, (1, 2), "depth - 1"))
        object.__setattr__(self, "kernels", _check_levels("kernels", kernels, self.depth, (1, 3), "depth"))

    def to_dict(self) -> dict:
        """The configuration as JSON-safe plain data: ``pools`` and ``kernels`` as lists of lists."""
        d = asdict(self)
        d["pools"] = [list(p) for p in self.pools]
        d["kernels"] = [list(k) for k in self.kernels]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Model3DConfig:
        """Rebuild a configuration from :meth:`to_dict`'s output (lists are read as tuples).

        Raises:
            UnetkitError: on an unknown key (naming the closest known one) or an invalid value.
        """
        if not isinstance(d, dict):
            raise UnetkitError(f"a 3D U-Net configuration must be a mapping of option names to values, got {type(d).__name__}")
        names = [f.name for f in fields(cls)]
        for key in d:
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known options: {', '.join(names)}"
                raise UnetkitError(f"unknown 3D U-Net option {key!r}; {hint}")
        return cls(**d)


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UnetkitError(f"{name}={value!r} is not a 3D U-Net setting; use one of {', '.join(map(repr, choices))}")


def _check_levels(name: str, levels: object, count: int, allowed: tuple[int, int], rule: str) -> tuple[Triple, ...]:
    """``levels`` as a tuple of ``count`` (z, y, x) triples with entries in ``allowed``; UnetkitError otherwise."""
    if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence):
        raise UnetkitError(f"{name}={levels!r} is not a list of (z, y, x) levels; give {count} of them, {_PLAN_HINT}")
    if len(levels) != count:
        raise UnetkitError(f"{name} has {len(levels)} levels but the depth needs {rule} = {count}; give {count}, {_PLAN_HINT}")
    out = []
    for i, level in enumerate(levels):
        ok = isinstance(level, Sequence) and len(level) == 3 and all(type(v) is int and v in allowed for v in level)
        if not ok:
            raise UnetkitError(f"{name}[{i}]={level!r}; each level is three whole numbers (z, y, x), each {allowed[0]} or "
                               f"{allowed[1]}; fix it, {_PLAN_HINT}")  # fmt: skip
        out.append(tuple(level))
    return tuple(out)


def plan_anisotropy(spacing: Sequence[float], depth: int) -> tuple[tuple[Triple, ...], tuple[Triple, ...]]:
    """Per-level pools and kernels for voxels of ``spacing`` (z, y, x), by nnU-Net's rule.

    At each level an axis whose current spacing is at most twice the smallest current spacing is convolved
    with 3 and (above the bottom level) pooled by 2, which doubles its spacing; a coarser axis gets kernel 1
    and is not pooled, until the finer axes have caught up. Units do not matter, only ratios.

    Args:
        spacing: Voxel size along (z, y, x), all > 0 (e.g. ``(50, 4, 4)`` nm for ISBI's EM stack).
        depth: Number of levels (>= 1).

    Returns:
        ``(pools, kernels)`` for :class:`Model3DConfig`: ``depth - 1`` and ``depth`` triples.

    Example:
        >>> plan_anisotropy((50, 4, 4), 5)
        (((1, 2, 2), (1, 2, 2), (1, 2, 2), (2, 2, 2)), ((1, 3, 3), (1, 3, 3), (1, 3, 3), (3, 3, 3), (3, 3, 3)))
    """
    ok = isinstance(spacing, Sequence) and len(spacing) == 3 and all(
        isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) and s > 0 for s in spacing)  # fmt: skip
    if not ok:
        raise UnetkitError(f"spacing={spacing!r}; give the voxel size as three positive numbers (z, y, x), e.g. (50, 4, 4)")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise UnetkitError(f"depth={depth!r}; use a whole number >= 1")
    current = [float(s) for s in spacing]
    pools, kernels = [], []
    for level in range(depth):
        fine = tuple(s <= 2 * min(current) for s in current)
        kernels.append(tuple(3 if f else 1 for f in fine))
        if level < depth - 1:
            pools.append(tuple(2 if f else 1 for f in fine))
            current = [s * 2 if f else s for s, f in zip(current, fine)]
    return tuple(pools), tuple(kernels)


# --- geometry, per axis ------------------------------------------------------------------------------
# Along one axis, level i has pool p_i and kernel k_i; a valid-mode double conv trims t_i = 2 (k_i - 1).
# With D_i = (skip size) - (up-path output) at level i (D = 0 at the bottom), the skip of level i exceeds
# the up-sampled map by m_i = p_i (D_{i+1} + t_{i+1}), and D_i = m_i + t_i: constants, whatever the input.
# The context (input - output) is D_0 + t_0: 16 for an isotropic depth 2, 184 for the 2D paper's depth 5.


def _axis(config: Model3DConfig, a: int) -> tuple[list[int], list[int]]:
    """Pools and kernels of axis ``a`` (0 = z), shallowest level first."""
    return [p[a] for p in config.pools], [k[a] for k in config.kernels]


def _total_pool(config: Model3DConfig) -> Triple:
    """Total down-sampling per axis: tiles must start on its multiples, same-mode sizes be its multiples."""
    return tuple(math.prod(_axis(config, a)[0]) for a in range(3))


def _margins_and_context(pools: list[int], kernels: list[int]) -> tuple[list[int], int]:
    """Valid-mode skip margins along one axis, deepest level first, and the context (see the comment above)."""
    margins, d = [], 0
    for i in reversed(range(len(pools))):
        margins.append(pools[i] * (d + 2 * (kernels[i + 1] - 1)))
        d = margins[-1] + 2 * (kernels[i] - 1)
    return margins, d + 2 * (kernels[0] - 1)


def _axis_output(size: int, pools: list[int], kernels: list[int], padding: str) -> int | None:
    """Output size along one axis for an input of ``size`` voxels, or None if the network cannot take it."""
    if padding == "same":
        total = math.prod(pools)
        return size if size >= total and size % total == 0 else None
    for i, k in enumerate(kernels):  # contracting path
        size -= 2 * (k - 1)
        if size < 1 or (i < len(pools) and size % pools[i]):
            return None
        size //= pools[i] if i < len(pools) else 1
    for i in reversed(range(len(pools))):  # expansive path
        size = size * pools[i] - 2 * (kernels[i] - 1)
        if size < 1:
            return None
    return size


def _valid_at_or_above(size: int, pools: list[int], kernels: list[int], padding: str) -> int:
    size = max(size, 1)
    while _axis_output(size, pools, kernels, padding) is None:
        size += 1
    return size


def context3d(config: Model3DConfig) -> Triple:
    """Voxels lost along (z, y, x): input size - output size in valid mode, (0, 0, 0) in same mode.

    Example:
        >>> context3d(Model3DConfig(depth=2))
        (16, 16, 16)
    """
    if config.padding == "same":
        return (0, 0, 0)
    return tuple(_margins_and_context(*_axis(config, a))[1] for a in range(3))


def output_shape(config: Model3DConfig, input_shape: Sequence[int]) -> Triple:
    """The network's output size (z, y, x) for an input of spatial size ``input_shape`` (z, y, x).

    Raises:
        UnetkitError: if a size does not pool evenly (valid mode: naming the nearest valid sizes; same mode:
            the size to pad to).

    Example:
        >>> output_shape(Model3DConfig(depth=2), (20, 22, 24))
        (4, 6, 8)
    """
    out = []
    for a, size in enumerate(_triple(input_shape, "input_shape")):
        pools, kernels = _axis(config, a)
        result = _axis_output(size, pools, kernels, config.padding)
        if result is None:
            raise UnetkitError(_size_message(config, a, size))
        out.append(result)
    return tuple(out)


def input_shape_for_output(config: Model3DConfig, output_shape: Sequence[int]) -> Triple:
    """The smallest valid input size (z, y, x) whose output is at least ``output_shape`` (z, y, x) voxels.

    Example:
        >>> input_shape_for_output(Model3DConfig(depth=2), (5, 5, 5))
        (22, 22, 22)
    """
    ctx = context3d(config)
    return tuple(
        _valid_at_or_above(max(size, 1) + c, *_axis(config, a), config.padding)
        for a, (size, c) in enumerate(zip(_triple(output_shape, "output_shape"), ctx))
    )


def _triple(shape: object, name: str) -> Triple:
    """``shape`` as three ints >= 1; an int stands for all three axes."""
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,) * 3
    if not (isinstance(shape, Sequence) and len(shape) == 3 and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1
                                                                    for s in shape)):  # fmt: skip
        raise UnetkitError(f"{name}={shape!r}; give three whole numbers >= 1 (z, y, x)")
    return tuple(int(s) for s in shape)


def _size_message(config: Model3DConfig, a: int, size: int) -> str:
    """The one-line refusal of input ``size`` along axis ``a``: the nearest sizes the network takes."""
    pools, kernels = _axis(config, a)
    axis = _AXES[a]
    above = _valid_at_or_above(size, pools, kernels, config.padding)
    if config.padding == "same":
        return (f"input size {size} along {axis} is not a multiple of {math.prod(pools)}, the total pooling along {axis} of this "
                f"3D U-Net with padding='same'; pad the volume to {above} along {axis}")  # fmt: skip
    below = next((s for s in range(size - 1, 0, -1) if _axis_output(s, pools, kernels, "valid") is not None), None)
    near = f"{below} or {above}" if below else f"{above}"
    return (f"input size {size} along {axis} is not valid for this depth-{config.depth} 3D U-Net with padding='valid'; nearest "
            f"valid sizes along {axis}: {near} (mirror-pad the volume to {above}, or predict with tiled_forward_valid)")  # fmt: skip


def _check_input(config: Model3DConfig, x: torch.Tensor) -> None:
    """Refuse a tensor of the wrong rank, channels or (per axis) size with one line saying the fix."""
    _check_channels(config, x)
    output_shape(config, tuple(x.shape[2:]))


def _check_channels(config: Model3DConfig, x: torch.Tensor) -> None:
    """Refuse a tensor that is not (N, in_channels, Z, Y, X)."""
    if x.dim() != 5:
        raise UnetkitError(f"the 3D U-Net takes a 5-D tensor (N, C, Z, Y, X), got shape {tuple(x.shape)}; "
                           "add the batch and channel axes, e.g. volume[None, None]")  # fmt: skip
    if x.shape[1] != config.in_channels:
        raise UnetkitError(f"input has {x.shape[1]} channels but the 3D U-Net was built for in_channels={config.in_channels}; "
                           f"pass {config.in_channels}-channel volumes or build the network with in_channels={x.shape[1]}")  # fmt: skip


# --- the network -------------------------------------------------------------------------------------


def _make_norm(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm3d(channels)
    if norm == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    return nn.Identity()


class DoubleConv3d(nn.Sequential):
    """Two convolutions of size ``kernel`` (kz, ky, kx), each followed by (optional normalisation and) ReLU.

    With ``padding="valid"`` an axis of kernel 3 loses 4 voxels overall, one of kernel 1 none.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: Triple, padding: str, norm: str) -> None:
        pad = tuple(k // 2 for k in kernel) if padding == "same" else 0
        bias = norm == "none"  # a bias before a normalisation layer is redundant
        super().__init__(
            nn.Conv3d(in_ch, out_ch, kernel, padding=pad, bias=bias),
            _make_norm(norm, out_ch),
            nn.ReLU(inplace=True),
            nn.Conv3d(out_ch, out_ch, kernel, padding=pad, bias=bias),
            _make_norm(norm, out_ch),
            nn.ReLU(inplace=True),
        )


class Up3d(nn.Module):
    """Up-sample by ``pool`` halving the channels, concatenate the centre-cropped skip, then a double conv.

    ``margin`` (z, y, x) is how many voxels the skip exceeds the up-sampled map by: constant for a level whatever the
    input size, so the crop is a constant slice.
    """

    def __init__(self, in_ch: int, out_ch: int, pool: Triple, kernel: Triple, config: Model3DConfig, margin: Triple) -> None:
        super().__init__()
        if config.up_mode == "transposed":
            self.up = nn.ConvTranspose3d(in_ch, out_ch, pool, stride=pool)
        else:
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=tuple(float(p) for p in pool), mode="trilinear", align_corners=False),
                nn.Conv3d(in_ch, out_ch, 1),
            )
        self.conv = DoubleConv3d(2 * out_ch, out_ch, kernel, config.padding, config.norm)
        self.margin = margin

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)  # (N, C/2, pz z, py y, px x)
        # (N, C/2, pz z, py y, px x): valid mode trims margin // 2 before and the rest after, per axis
        skip = skip[(..., *(slice(m // 2, -(m - m // 2) or None) for m in self.margin))]
        return self.conv(torch.cat([skip, x], dim=1))  # cat -> (N, C, pz z, py y, px x)


class UNet3D(nn.Module):
    """The 3D U-Net that ``config`` (or the keyword arguments of :class:`Model3DConfig`) describes.

    Example:
        >>> net = UNet3D(base_channels=2, depth=2, norm="none")
        >>> net(torch.zeros(1, 1, 20, 22, 24)).shape
        torch.Size([1, 2, 4, 6, 8])
    """

    def __init__(self, config: Model3DConfig | None = None, **kwargs) -> None:
        super().__init__()
        self.config = config if config is not None else Model3DConfig(**kwargs)
        c = self.config
        widths = [c.base_channels * 2**i for i in range(c.depth)]  # 32, 64, 128, 256
        self.down = nn.ModuleList()
        in_ch = c.in_channels
        for w, kernel in zip(widths, c.kernels):
            self.down.append(DoubleConv3d(in_ch, w, kernel, c.padding, c.norm))
            in_ch = w
        self.pool = nn.ModuleList(nn.MaxPool3d(p, stride=p) for p in c.pools)
        self.dropout = nn.Dropout(c.dropout) if c.dropout > 0 else nn.Identity()
        per_axis = [_margins_and_context(*_axis(c, a))[0] if c.padding == "valid" else [0] * (c.depth - 1) for a in range(3)]
        margins = list(zip(*per_axis))  # (mz, my, mx) per level, deepest first like self.up
        self.up = nn.ModuleList(
            Up3d(widths[i + 1], widths[i], c.pools[i], c.kernels[i], c, margin)
            for i, margin in zip(reversed(range(c.depth - 1)), margins)
        )
        self.head = nn.Conv3d(widths[0], c.num_classes, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He (Kaiming) normal initialisation of every convolution, std = sqrt(2 / fan_in), as the 2D U-Net; zero biases."""
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):  # a traced check would freeze the sizes
            _check_input(c, x)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)  # (N, w_i, z, y, x): valid mode trims 4 voxels along each axis of kernel 3
            if i < c.depth - 1:
                skips.append(x)
                x = self.pool[i](x)  # (N, w_i, z / pz, y / py, x / px)
        x = self.dropout(x)  # end of the contracting path
        for up, skip in zip(self.up, reversed(skips)):
            x = up(x, skip)
        return self.head(x)  # (N, num_classes, Z_out, Y_out, X_out)


# --- overlap-tile prediction ------------------------------------------------------------------------


def _reflect_index(length: int, before: int, after: int) -> torch.Tensor:
    """Indices that mirror an axis of ``length`` by ``before`` and ``after`` voxels (repeatedly, if needed)."""
    i = torch.arange(-before, length + after)
    if length == 1:
        return torch.zeros_like(i)  # one voxel can only be repeated
    period = 2 * (length - 1)  # reflect without repeating the edge voxel, as numpy's "reflect"
    i = i.remainder(period)
    return torch.where(i >= length, period - i, i)


def tiled_forward_valid(model: UNet3D, volume: torch.Tensor, out_tile: int | Sequence[int]) -> torch.Tensor:
    """Predict a (1, C, Z, Y, X) volume tile by tile with a valid-mode network: logits (1, num_classes, Z, Y, X).

    The volume is mirrored by the context and cut into valid input tiles. Each tile's output step is
    ``out_tile`` rounded down to a multiple of the total pooling (at least one pooling step), so tiles start on
    the pooling grid; the tiles' kept outputs abut exactly. With transposed up-sampling and no normalisation or
    batch norm in eval mode, the result equals one pass over the whole mirrored volume; instance norm and
    trilinear up-sampling see the tile's borders and differ near them. Runs without gradients, in the model's
    current mode (call ``model.eval()`` first).

    Args:
        model: A :class:`UNet3D` with ``padding="valid"``.
        volume: (1, in_channels, Z, Y, X) tensor on the model's device.
        out_tile: Output voxels per tile, one int for all axes or (z, y, x).

    Raises:
        UnetkitError: for a same-mode model or a volume of the wrong shape.
    """
    c = model.config
    if c.padding != "valid":
        raise UnetkitError("tiled_forward_valid needs a network with padding='valid'; a same-mode network takes any volume "
                           "whose sizes are multiples of its total pooling: pad it and call the network")  # fmt: skip
    if volume.dim() != 5 or volume.shape[0] != 1:
        raise UnetkitError(f"tiled_forward_valid takes one volume shaped (1, C, Z, Y, X), got {tuple(volume.shape)}")
    _check_channels(c, volume)
    sizes = tuple(volume.shape[2:])
    total = _total_pool(c)
    steps = tuple(min(max(s, t // s * s), math.ceil(n / s) * s) for t, s, n in zip(_triple(out_tile, "out_tile"), total, sizes))
    tile_in = input_shape_for_output(c, steps)
    counts = [math.ceil(n / step) for n, step in zip(sizes, steps)]
    before = [ctx // 2 for ctx in context3d(c)]  # output voxel j sees input voxels centred on j + context / 2
    for a, (n, count, step, t_in, b) in enumerate(zip(sizes, counts, steps, tile_in, before)):
        volume = volume.index_select(2 + a, _reflect_index(n, b, (count - 1) * step + t_in - n - b).to(volume.device))
    out = None
    with torch.no_grad():
        for index in itertools.product(*(range(n) for n in counts)):
            starts = [i * step for i, step in zip(index, steps)]
            tile = volume[(..., *(slice(s, s + t) for s, t in zip(starts, tile_in)))]  # (1, C, tile_in)
            pred = model(tile)[(..., *(slice(0, step) for step in steps))]  # (1, classes, steps): the kept part
            if out is None:
                out = pred.new_empty((1, pred.shape[1], *(n * step for n, step in zip(counts, steps))))
            out[(..., *(slice(s, s + step) for s, step in zip(starts, steps)))] = pred
    return out[(..., *(slice(0, n) for n in sizes))]  # (1, num_classes, Z, Y, X)
