"""Building blocks of the U-Net: the double conv, the down and up steps, and the skip crop."""

from __future__ import annotations

import torch
from torch import nn

from unetkit.models.config import NORMS, UP_MODES



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
    """Up-sample by 2 halving the channels, concatenate the (cropped) skip, then a double conv."""

    def __init__(self, in_ch: int, out_ch: int, padding: str, norm: str, up_mode: str) -> None:
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

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)  # (N, C/2, 2h, 2w)
        skip = center_crop(skip, x.shape[-2:])  # (N, C/2, 2h, 2w): valid mode trims the skip
        return self.conv(torch.cat([skip, x], dim=1))  # cat -> (N, C, 2h, 2w)


def center_crop(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Crop the last two dims of ``x`` to ``size`` around the centre (the paper's skip crop)."""
    h, w = x.shape[-2:]
    th, tw = int(size[0]), int(size[1])
    if (h, w) == (th, tw):
        return x
    if th > h or tw > w:
        raise ValueError(f"cannot crop {(h, w)} to larger {(th, tw)}")
    top, left = (h - th) // 2, (w - tw) // 2
    return x[..., top : top + th, left : left + tw]

