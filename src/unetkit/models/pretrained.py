"""Pretrained encoder weights: torchvision's ImageNet files, from a path or downloaded, into an encoder.

``--encoder-weights imagenet`` downloads torchvision's file (:data:`~unetkit.models.encoders.WEIGHT_URLS`)
once into torch.hub's cache (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``),
checking the SHA-256 prefix in its name; ``--encoder-weights PATH`` reads a file the user has, e.g. the same
file copied to a machine without network. Files are read with ``torch.load(weights_only=True)``: tensors
only, never code. The classifier's keys (``fc.*``, ``classifier.*``) are dropped, the first convolution is
adapted to the data's channels (:func:`adapt_first_conv`), and the rest must match the encoder exactly.

Pretrained encoders expect inputs normalised as ImageNet's were: :func:`imagenet_stats` gives the mean and
std, in the data's units, that the trainer stores in the checkpoint instead of the data's own.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from unetkit.errors import UnetkitError
from unetkit.models.encoders import (
    BUILDERS,
    CLASSIFIER_PREFIXES,
    FIRST_CONV,
    WEIGHT_URLS,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # of RGB in [0, 1], as torchvision's ImageNet weights were trained
IMAGENET_STD = (0.229, 0.224, 0.225)


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """RGB kernels (O, 3, k, k) of a first convolution for ``in_channels`` inputs, as segmentation_models_pytorch does.

    1 channel: the sum over R, G and B (a gray image then gives the response of that gray in RGB). Other
    counts: the RGB kernels repeated cyclically (R, G, B, R, ...) and scaled by 3 / ``in_channels``, so inputs
    that repeat RGB give the original response. 3 channels: unchanged.

    Example:
        >>> adapt_first_conv(torch.ones(1, 3, 1, 1), 1).flatten().tolist()
        [3.0]
    """
    rgb = weight.shape[1]
    if in_channels == rgb:
        return weight
    if in_channels == 1:
        return weight.sum(1, keepdim=True)  # (O, 1, k, k)
    order = torch.arange(in_channels) % rgb
    return weight[:, order] * (rgb / in_channels)  # (O, in_channels, k, k)


def imagenet_stats(channels: int, peak: float) -> dict:
    """ImageNet's per-channel mean and std for data whose full scale is ``peak`` (255 for 8-bit images).

    RGB gets ImageNet's; 1 channel the average of the three (its kernel is their sum); more channels repeat
    R, G, B cyclically, like :func:`adapt_first_conv`.

    Example:
        >>> [round(m, 3) for m in imagenet_stats(3, 255)["mean"]]
        [123.675, 116.28, 103.53]
    """
    if channels == 1:
        mean, std = [sum(IMAGENET_MEAN) / 3], [sum(IMAGENET_STD) / 3]
    else:
        mean, std = [IMAGENET_MEAN[i % 3] for i in range(channels)], [IMAGENET_STD[i % 3] for i in range(channels)]
    return {"mean": [m * peak for m in mean], "std": [s * peak for s in std]}


def load_encoder_weights(model: nn.Module, source: str, progress: bool = True) -> None:
    """Load pretrained weights into ``model.encoder`` (an :class:`~unetkit.models.encoder_unet.EncoderUNet`).

    Args:
        model: The network; ``model.config.encoder`` names the encoder.
        source: ``"imagenet"`` (torchvision's published file, downloaded once into torch.hub's cache) or the
            path of a torchvision state-dict file.
        progress: Show a download progress bar.

    Raises:
        UnetkitError: naming the file or URL and the fix, when the file is missing, unreadable, not plain
            tensors, belongs to another encoder, or cannot be downloaded.
    """
    name = model.config.encoder
    weights = download_weights(name, progress) if source == "imagenet" else read_weights(Path(source), name)
    where = WEIGHT_URLS[name] if source == "imagenet" else f"--encoder-weights {source}"
    model.encoder.load_state_dict(fit_weights(weights, name, model.config.in_channels, where))


def cached_weights() -> dict[str, Path]:
    """The encoders whose ImageNet file is already in torch.hub's cache (``--encoder-weights imagenet`` then
    needs no download): encoder name -> file."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    return {name: folder / _file(name) for name in WEIGHT_URLS if (folder / _file(name)).is_file()}


def _file(name: str) -> str:
    return Path(urlparse(WEIGHT_URLS[name]).path).name


def read_weights(path: Path, name: str) -> dict:
    """The state dict in ``path``, read as tensors only; UnetkitError naming the file and the fix otherwise."""
    fix = f"pass torchvision's {name} file ({_file(name)}, from {WEIGHT_URLS[name]}) or --encoder-weights imagenet"
    if not path.is_file():
        raise UnetkitError(f"--encoder-weights {path}: {'a folder, not a file' if path.is_dir() else 'no such file'}; {fix}")
    try:
        weights = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # weights_only refused a class (a "global"), or the bytes are no pickle at all
        what = "holds Python objects besides tensors, which unetkit does not unpickle" if "global" in str(error) else "not a PyTorch weights file"
        raise UnetkitError(f"--encoder-weights {path}: {what}; {fix}") from None
    except Exception as error:  # noqa: BLE001 - torch.load raises many types for a damaged or foreign file
        raise UnetkitError(f"--encoder-weights {path}: not a PyTorch weights file ({type(error).__name__}); {fix}") from None
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise UnetkitError(f"--encoder-weights {path}: holds a {type(weights).__name__}, not a state dict of tensors; {fix}")
    return weights


def download_weights(name: str, progress: bool) -> dict:
    """torchvision's ImageNet weights of encoder ``name``, from torch.hub's cache or downloaded and hash-checked."""
    url = WEIGHT_URLS[name]
    by_hand = "download it by hand (on any machine) and pass --encoder-weights PATH"
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=progress, check_hash=True, weights_only=True)
    except OSError as error:  # no network (URLError), HTTP errors, timeouts, an unwritable cache
        raise UnetkitError(f"--encoder-weights imagenet: could not download {url} ({getattr(error, 'reason', None) or error}); {by_hand}") from None
    except Exception as error:  # noqa: BLE001 - a damaged download (RuntimeError) or cached file (any of torch.load's)
        if "invalid hash" in str(error):
            raise UnetkitError(f"--encoder-weights imagenet: the download of {url} was damaged (its SHA-256 does not match); retry, or {by_hand}") from None
        cached = Path(torch.hub.get_dir()) / "checkpoints" / _file(name)
        raise UnetkitError(f"--encoder-weights imagenet: the cached {cached} is damaged; delete it and retry, or download {url} by hand "
                           "and pass --encoder-weights PATH") from None


def fit_weights(weights: dict, name: str, in_channels: int, where: str) -> dict:
    """``weights`` less the classifier, the first conv adapted to ``in_channels``; checked against encoder ``name``."""
    weights = {k: v for k, v in weights.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    first = FIRST_CONV[name]
    if first in weights and weights[first].ndim == 4 and weights[first].shape[1] == 3:
        weights[first] = adapt_first_conv(weights[first], in_channels)
    expected = _shapes(name, in_channels)
    for key in expected:  # files saved before PyTorch 0.4.1 lack the batch-norm step counters, which are not learned
        if key.endswith("num_batches_tracked") and key.replace("num_batches_tracked", "running_mean") in weights:
            weights.setdefault(key, torch.tensor(0))
    got = {k: tuple(v.shape) for k, v in weights.items()}
    if got != expected:
        other = identify(weights)
        if other is not None and other != name:
            raise UnetkitError(f"{where}: holds {other} weights, not {name}; pass --encoder {other}, or {name}'s file ({_file(name)})")
        key = next(k for k in [*expected, *got] if expected.get(k) != got.get(k))
        what = "missing" if key not in got else "unexpected" if key not in expected else f"shape {got[key]}, expected {expected[key]}"
        raise UnetkitError(f"{where}: not torchvision's {name} weights ({key}: {what}); pass {name}'s file ({_file(name)}, from {WEIGHT_URLS[name]})")
    return weights


def _shapes(name: str, in_channels: int) -> dict[str, tuple]:
    """Key -> shape of encoder ``name``'s state dict, built on the meta device (no memory, no initialisation)."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in BUILDERS[name](in_channels).state_dict().items()}


def identify(weights: dict) -> str | None:
    """The encoder whose keys ``weights`` has (its first conv on any channels), or None."""
    keys = set(weights)
    for name in BUILDERS:
        if keys == set(_shapes(name, 3)):
            return name
    return None
