"""A U-Net whose contracting path is a torchvision classifier (:mod:`unetkit.models.encoders`), for photographs.

Encoder: ResNet-18/34 or MobileNetV2 without its head, five feature maps at strides 2 to 32. Decoder, as in
segmentation_models_pytorch's ``Unet``: five blocks, each up-sampling by 2, concatenating the encoder's
feature map of that size (none at full resolution), then two 3x3 convs + normalisation + ReLU; widths
``base_channels * (16, 8, 4, 2, 1)`` (256 ... 16 with the default 16). A 1x1 conv maps to the logits. With
bilinear up-sampling (the default with an encoder) the decoder has smp's 3,151,552 parameters for a ResNet.

Same padding throughout: the output has the input's size, which must be a multiple of 32 (the geometry of a
same-padded depth-6 U-Net, :func:`unetkit.models.config.check_input_size`). Pretrained weights are loaded by
:func:`unetkit.models.pretrained.load_encoder_weights` into ``encoder``, whose keys are torchvision's.
"""

from __future__ import annotations

import torch
from torch import nn

from unetkit.models.blocks import DoubleConv, check_eager_input, he_normal_
from unetkit.models.config import ModelConfig
from unetkit.models.encoders import make_encoder


class DecoderBlock(nn.Module):
    """Up-sample by 2, concatenate the skip, then a double conv.

    ``up_mode="bilinear"``: parameter-free interpolation, then the double conv on ``in_ch + skip_ch`` channels
    (segmentation_models_pytorch's decoder, which interpolates to the nearest pixel). ``"transposed"``: the
    paper's 2x2 up-convolution, to ``out_ch`` channels, then the double conv on ``out_ch + skip_ch``.
    """

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, norm: str, up_mode: str) -> None:
        super().__init__()
        if up_mode == "transposed":
            self.up, up_ch = nn.ConvTranspose2d(in_ch, out_ch, 2, stride=2), out_ch
        else:
            self.up, up_ch = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), in_ch
        self.conv = DoubleConv(up_ch + skip_ch, out_ch, "same", norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = self.up(x)  # (N, C_up, 2h, 2w)
        if skip is not None:
            x = torch.cat([skip, x], dim=1)  # (N, C_skip + C_up, 2h, 2w)
        return self.conv(x)  # (N, C_out, 2h, 2w)


class EncoderUNet(nn.Module):
    """A pretrained-encoder U-Net; ``config.encoder`` names the encoder.

    Example:
        >>> net = EncoderUNet(ModelConfig(in_channels=3, encoder="resnet18", padding="same", depth=6, base_channels=16, norm="batch"))
        >>> net(torch.zeros(1, 3, 96, 160)).shape
        torch.Size([1, 2, 96, 160])
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.encoder == "none":
            raise ValueError("EncoderUNet needs config.encoder; use UNet for encoder='none'")
        self.config = c = config
        self.encoder = make_encoder(c.encoder, c.in_channels)
        skips = [*reversed(self.encoder.out_channels[:-1]), 0]  # deepest first; nothing at full resolution
        widths = [c.base_channels * 2**i for i in reversed(range(5))]  # 256, 128, 64, 32, 16
        ins = [self.encoder.out_channels[-1], *widths[:-1]]
        self.dropout = nn.Dropout(c.dropout) if c.dropout > 0 else nn.Identity()
        self.decoder = nn.ModuleList(DecoderBlock(i, s, w, c.norm, c.up_mode) for i, s, w in zip(ins, skips, widths))
        self.head = nn.Conv2d(widths[-1], c.num_classes, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He (Kaiming) normal initialisation of the decoder and head, zero biases; the encoder keeps its own."""
        he_normal_([*self.decoder.modules(), self.head])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        check_eager_input(x, c.depth, c.padding)
        features = self.encoder(x)  # strides 2, 4, 8, 16, 32
        x = self.dropout(features[-1])  # (N, C_5, H/32, W/32): end of the contracting path
        for block, skip in zip(self.decoder, [*reversed(features[:-1]), None]):
            x = block(x, skip)  # (N, w_i, 2h, 2w)
        return self.head(x)  # (N, num_classes, H, W)
