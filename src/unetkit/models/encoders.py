"""torchvision's ImageNet classifiers without their heads, as contracting paths of a U-Net.

The modules and their attribute names are torchvision's (``torchvision.models.resnet``,
``torchvision.models.mobilenetv2``), so a state dict that torchvision publishes, less its classifier
(``fc.*``, ``classifier.*``), loads into them with ``strict=True``; torchvision itself is not needed.
Each encoder returns five feature maps, at strides 2, 4, 8, 16 and 32, with ``out_channels`` channels: the
skips of the decoder and its bottom.

Example:
    >>> enc = make_encoder("resnet34", in_channels=3)
    >>> [f.shape[1] for f in enc(torch.zeros(1, 3, 64, 64))]
    [64, 64, 128, 256, 512]
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

#: torchvision's published ImageNet weights (IMAGENET1K_V1); the part after the last "-" is the start of the
#: file's SHA-256, which ``torch.hub.load_state_dict_from_url(check_hash=True)`` verifies on download.
WEIGHT_URLS = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
    "mobilenet_v2": "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
}
CLASSIFIER_PREFIXES = ("fc.", "classifier.")  # the heads of the published files, which the encoders leave out
FIRST_CONV = {"resnet18": "conv1.weight", "resnet34": "conv1.weight", "mobilenet_v2": "features.0.0.weight"}


class BasicBlock(nn.Module):
    """torchvision's ResNet basic block: two 3x3 conv + BN, a shortcut (1x1 conv + BN where the shape changes)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)  # (N, out_ch, h / stride, w / stride)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision's ResNet with basic blocks (18, 34 layers) up to ``layer4``: no average pool, no ``fc``."""

    def __init__(self, layers: tuple[int, int, int, int], in_channels: int = 3) -> None:
        super().__init__()
        self.out_channels = (64, 64, 128, 256, 512)
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths, strides = (64, 128, 256, 512), (1, 2, 2, 2)
        in_ch = 64
        for i, (w, n, s) in enumerate(zip(widths, layers, strides)):
            setattr(self, f"layer{i + 1}", nn.Sequential(*(BasicBlock(in_ch if j == 0 else w, w, s if j == 0 else 1) for j in range(n))))
            in_ch = w
        _init_like_torchvision(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))  # (N, 64, H/2, W/2)
        features = [x]
        x = self.maxpool(x)  # (N, 64, H/4, W/4)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)  # (N, 64|128|256|512, H/4 .. H/32, ...)
            features.append(x)
        return features


def conv_bn_act(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """torchvision's ``Conv2dNormActivation`` with ReLU6: keys ``0.weight`` (conv), ``1.*`` (batch norm)."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU6(inplace=True))  # fmt: skip


class InvertedResidual(nn.Module):
    """torchvision's MobileNetV2 block: 1x1 expansion, 3x3 depthwise conv, linear 1x1 projection; residual if shapes agree."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_ch * expand_ratio
        self.use_res_connect = stride == 1 and in_ch == out_ch
        layers = [conv_bn_act(in_ch, hidden, kernel=1)] if expand_ratio != 1 else []
        layers += [conv_bn_act(hidden, hidden, stride=stride, groups=hidden), nn.Conv2d(hidden, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2 (width 1.0) up to ``features.18``, the 1x1 conv to 1280 channels: no ``classifier``.

    The five outputs are those of segmentation_models_pytorch's encoder: after ``features`` 1, 3, 6, 13 and 18.
    """

    SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))  # t, c, n, s
    STAGE_ENDS = (1, 3, 6, 13, 18)

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.out_channels = (16, 24, 32, 96, 1280)
        layers, in_ch = [conv_bn_act(in_channels, 32, stride=2)], 32
        for t, c, n, s in self.SETTING:
            for j in range(n):
                layers.append(InvertedResidual(in_ch, c, s if j == 0 else 1, t))
                in_ch = c
        layers.append(conv_bn_act(in_ch, 1280, kernel=1))
        self.features = nn.Sequential(*layers)
        _init_like_torchvision(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.STAGE_ENDS:
                features.append(x)  # (N, 16|24|32|96|1280, H/2 .. H/32, ...)
        return features


def _init_like_torchvision(module: nn.Module) -> None:
    """torchvision's initialisation of these networks: He normal (fan out) convs, zero biases, unit batch norms."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


BUILDERS: dict[str, Callable[[int], nn.Module]] = {
    "resnet18": lambda in_channels: ResNet((2, 2, 2, 2), in_channels),
    "resnet34": lambda in_channels: ResNet((3, 4, 6, 3), in_channels),
    "mobilenet_v2": lambda in_channels: MobileNetV2(in_channels),
}


def make_encoder(name: str, in_channels: int = 3) -> nn.Module:
    """The encoder ``name`` (a key of :data:`BUILDERS`) for ``in_channels`` input channels, randomly initialised."""
    if name not in BUILDERS:
        raise ValueError(f"encoder={name!r}; expected one of {tuple(BUILDERS)}")
    return BUILDERS[name](in_channels)
