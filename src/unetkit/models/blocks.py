"""Building blocks of the U-Net: the double conv, the up step with its skip crop, and the crop margins."""

from __future__ import annotations

import torch
from torch import nn

from unetkit.models.config import NORMS, UP_MODES, check_input_size


def make_norm(norm: str, channels: int) -> nn.Module:
    """Return the normalisation layer named by ``norm`` for ``channels`` feature maps."""
    if norm == "none":
        return nn.Identity()
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        # 8 channels per group, as is common; at least one group.
        return nn.GroupNorm(max(1, channels // 8), channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    raise ValueError(f"norm={norm!r}; expected one of {NORMS}")


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by (optional normalisation and) ReLU.

    With ``padding="valid"`` each conv trims one pixel per side: H -> H - 4 overall.
    """

    def __init__(self, in_ch: int, out_ch: int, padding: str, norm: str) -> None:
        pad = 1 if padding == "same" else 0
        bias = norm == "none"  # a bias before a normalisation layer is redundant
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=pad, bias=bias),
            make_norm(norm, out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=pad, bias=bias),
            make_norm(norm, out_ch),
            nn.ReLU(inplace=True),
        )


class Up(nn.Module):
    """Up-sample by 2 halving the channels, concatenate the (cropped) skip, then a double conv.

    ``margin`` is how many pixels the skip exceeds the up-sampled map along each axis: constant for a
    level whatever the input size (see :func:`skip_margins`), so the crop is a constant slice that a
    tracer keeps symbolic and the exported graph runs on any valid size.
    """

    def __init__(self, in_ch: int, out_ch: int, padding: str, norm: str, up_mode: str, margin: int = 0) -> None:
        super().__init__()
        if up_mode == "transposed":
            # The paper's "2x2 up-convolution that halves the number of feature channels".
            self.up = nn.ConvTranspose2d(in_ch, out_ch, 2, stride=2)
        elif up_mode == "bilinear":
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_ch, out_ch, 1),
            )
        else:
            raise ValueError(f"up_mode={up_mode!r}; expected one of {UP_MODES}")
        self.conv = DoubleConv(2 * out_ch, out_ch, padding, norm)
        self.margin = margin

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)  # (N, C/2, 2h, 2w)
        skip = crop_margin(skip, self.margin)  # (N, C/2, 2h, 2w): valid mode trims the skip
        return self.conv(torch.cat([skip, x], dim=1))  # cat -> (N, C, 2h, 2w)


def skip_margins(depth: int, padding: str) -> list[int]:
    """Pixels the skip of each level exceeds the up-sampled map by, deepest level first (the paper's crop).

    Valid mode: each double conv trims 4 pixels. With ``d`` the difference between a level's skip and the
    output of its up step (0 at the bottom), the next level up has margin ``2 d + 8`` and difference
    ``2 d + 12``: 8, 32, 80, 176 for the paper's depth 5, whatever the input size. Same mode: all 0.

    Example:
        >>> skip_margins(5, "valid")
        [8, 32, 80, 176]
    """
    if padding != "valid":
        return [0] * (depth - 1)
    margins, d = [], 0
    for _ in range(depth - 1):
        margins.append(2 * d + 8)
        d = 2 * d + 12
    return margins


def crop_margin(x: torch.Tensor, margin: int) -> torch.Tensor:
    """Remove ``margin`` pixels from the last two axes of ``x``: ``margin // 2`` before, the rest after."""
    if margin == 0:
        return x
    a, b = margin // 2, margin - margin // 2
    return x[..., a:-b, a:-b]


def he_normal_(modules) -> None:
    """He (Kaiming) normal initialisation of the convolutions among ``modules``, std = sqrt(2 / fan_in), as in the
    paper; zero biases."""
    for m in modules:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def check_eager_input(x: torch.Tensor, depth: int, padding: str) -> None:
    """Refuse an input size the network cannot take, except while tracing or compiling (a traced check would freeze the sizes)."""
    if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
        check_input_size(tuple(x.shape[-2:]), depth, padding)
