"""The U-Net of Ronneberger, Fischer and Brox (MICCAI 2015), readable top to bottom.

Contracting path: per level two 3x3 convs + ReLU, then 2x2 max-pool (stride 2) with channels doubling.
Expansive path: 2x2 up-convolution halving the channels, crop of the skip feature map, concatenation,
two 3x3 convs + ReLU. A 1x1 conv maps to ``num_classes`` logits.

``padding="valid"`` is the paper's unpadded network: the output is smaller than the input
(572 -> 388 with the defaults) and every output pixel sees its full context, which makes overlap-tile
inference exact. ``padding="same"`` pads the convs so the output has the input's size.

The forward pass is also the exported one (:mod:`unetkit.exporting`): skip crops are constant margins
and the input-size check is skipped while tracing, so a traced graph keeps every size symbolic.

:func:`build_model` is the one factory of networks (this U-Net, or with ``config.encoder`` the pretrained-encoder
U-Net of :mod:`unetkit.models.encoder_unet`), and :func:`unet_from_weights` rebuilds one from a checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn

from unetkit.errors import UnetkitError
from unetkit.models.blocks import (
    DoubleConv,
    Up,
    check_eager_input,
    he_normal_,
    skip_margins,
)
from unetkit.models.config import ModelConfig
from unetkit.models.encoder_unet import EncoderUNet


class UNet(nn.Module):
    """The U-Net. ``UNet()`` is the paper's network: 1 channel in, 2 classes, 31,030,658 parameters.

    Example:
        >>> net = UNet(in_channels=1, num_classes=2)
        >>> net(torch.zeros(1, 1, 572, 572)).shape
        torch.Size([1, 2, 388, 388])
    """

    def __init__(self, config: ModelConfig | None = None, **kwargs) -> None:
        super().__init__()
        self.config = config if config is not None else ModelConfig(**kwargs)
        c = self.config
        widths = [c.base_channels * 2**i for i in range(c.depth)]  # 64, 128, 256, 512, 1024
        self.down = nn.ModuleList()
        in_ch = c.in_channels
        for w in widths:
            self.down.append(DoubleConv(in_ch, w, c.padding, c.norm))
            in_ch = w
        self.pool = nn.MaxPool2d(2, stride=2)
        self.dropout = nn.Dropout(c.dropout) if c.dropout > 0 else nn.Identity()
        margins = skip_margins(c.depth, c.padding)  # deepest level first, like self.up
        self.up = nn.ModuleList(
            Up(widths[i + 1], widths[i], c.padding, c.norm, c.up_mode, margin)
            for i, margin in zip(reversed(range(c.depth - 1)), margins)
        )
        self.head = nn.Conv2d(widths[0], c.num_classes, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He (Kaiming) normal initialisation, std = sqrt(2 / fan_in), as in the paper; zero biases."""
        he_normal_(self.modules())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        check_eager_input(x, c.depth, c.padding)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)  # (N, w_i, h, w): valid mode trims 4 pixels
            if i < c.depth - 1:
                skips.append(x)
                x = self.pool(x)  # (N, w_i, h/2, w/2)
        x = self.dropout(x)  # end of the contracting path
        for up, skip in zip(self.up, reversed(skips)):
            x = up(x, skip)  # (N, w_i, 2h - 4, 2w - 4) in valid mode
        return self.head(x)  # (N, num_classes, H_out, W_out)


def build_model(config: ModelConfig) -> UNet | EncoderUNet:
    """The network ``config`` describes, randomly initialised: the U-Net, or with ``config.encoder`` an :class:`EncoderUNet`.

    Example:
        >>> sum(p.numel() for p in build_model(ModelConfig()).parameters())
        31030658
    """
    return UNet(config) if config.encoder == "none" else EncoderUNet(config)


def unet_from_weights(config: object, weights: object, where: str) -> UNet | EncoderUNet:
    """The U-Net that a checkpoint's metadata ``config`` describes, holding ``weights`` (a state dict).

    The description is checked against the stored tensors first, on PyTorch's meta device where no memory is
    allocated, so edited metadata (``depth: 40``, a billion channels) is refused before any network is built;
    then the values: weights must be finite real numbers and batch-norm variances not negative, or every
    prediction would be NaN.

    Raises:
        UnetkitError: naming ``where`` when ``config`` is no U-Net configuration, does not match ``weights``, or
            a stored tensor holds values no trained network has.
    """
    damaged = "the file is damaged or was edited; re-train or re-copy it"
    try:
        cfg = ModelConfig.from_dict(config)
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in build_model(cfg).state_dict().items()}
        stored = {k: tuple(v.shape) for k, v in weights.items()}
    except (TypeError, ValueError, AttributeError, OverflowError, RuntimeError) as error:
        raise UnetkitError(f"{where}: its model metadata is not a U-Net configuration ({error}); {damaged}") from None
    if expected != stored:
        key = next(k for k in sorted(set(expected) | set(stored)) if expected.get(k) != stored.get(k))
        raise UnetkitError(f"{where}: its model metadata does not match its weights ({key}: {expected.get(key)} by the metadata, "
                           f"{stored.get(key)} stored); {damaged}")
    _check_values(weights, where)
    net = build_model(cfg)
    net.load_state_dict(weights)
    return net


def _check_values(weights: dict[str, torch.Tensor], where: str) -> None:
    """Refuse complex, NaN or infinite weights and negative batch-norm variances, naming the first such tensor."""
    for key, tensor in weights.items():
        if tensor.is_complex():
            raise UnetkitError(f"{where}: its weights {key} are complex numbers; the file is damaged or was edited; re-train or re-copy it")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UnetkitError(f"{where}: its weights {key} hold NaN or infinite values, so every prediction would be NaN; the training "
                               "that wrote it diverged or the file is damaged: use an earlier checkpoint or re-train")  # fmt: skip
        if key.endswith("running_var") and bool((tensor < 0).any()):
            raise UnetkitError(f"{where}: its batch-norm variances {key} are negative; the file is damaged or was edited; re-train or re-copy it")
