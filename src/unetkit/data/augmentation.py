"""What augmentation does, without doing it: the :class:`Augmentation` settings, the presets and their
resolution with overrides. No numpy or OpenCV, so training options can be read and checked cheaply;
:mod:`unetkit.data.augment` applies them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from unetkit.errors import UnetkitError

AUGMENTS = ("none", "light", "paper", "strong")



@dataclass(frozen=True)
class Augmentation:
    """The random transforms applied to each training patch; zero or one means off.

    Attributes:
        flip_rotate: Random horizontal and vertical flips and a random multiple of 90 degrees.
        hflip: Random left-right flips only, for images with an up direction (street scenes); ignored
            under ``flip_rotate``, which includes them.
        rotate_degrees: Rotation by an angle drawn uniformly in ``[-rotate_degrees, rotate_degrees]``.
        scale_range: Zoom factor drawn log-uniformly in ``[low, high]`` (> 1 enlarges the content).
        elastic_sigma: Standard deviation, in pixels, of the random displacements on the coarse grid of
            the paper's elastic deformation (paper: 10).
        elastic_grid: Points per side of that grid (paper: 3); displacements between them are bicubic.
        brightness: Shift of every channel by one value drawn in ``[-brightness, brightness]``, in units
            of the channel's standard deviation (images are standardised).
        contrast: Each channel scaled about its mean by a factor drawn in ``[1 - contrast, 1 + contrast]``.
        gamma: Gamma drawn log-uniformly in ``[1 / gamma, gamma]``, applied on each channel's range.
        noise_std: Gaussian noise with a standard deviation drawn in ``[0, noise_std]``.
        blur_sigma: Half of the patches are blurred by a Gaussian of sigma drawn in ``[0, blur_sigma]`` px.
    """

    flip_rotate: bool = False
    hflip: bool = False
    rotate_degrees: float = 0.0
    scale_range: tuple[float, float] = (1.0, 1.0)
    elastic_sigma: float = 0.0
    elastic_grid: int = 3
    brightness: float = 0.0
    contrast: float = 0.0
    gamma: float = 1.0
    noise_std: float = 0.0
    blur_sigma: float = 0.0

    @property
    def warps(self) -> bool:
        """True when some transform needs interpolation (rotation by any angle, scaling, elastic)."""
        return self.rotate_degrees > 0 or tuple(self.scale_range) != (1.0, 1.0) or self.elastic_sigma > 0

    @property
    def intensity(self) -> bool:
        """True when some transform changes the image values."""
        return (self.brightness > 0 or self.contrast > 0 or self.gamma > 1 or self.noise_std > 0
                or self.blur_sigma > 0)  # fmt: skip


PRESETS: dict[str, Augmentation] = {
    "none": Augmentation(),
    "light": Augmentation(flip_rotate=True),
    # Ronneberger et al. 2015, section 3.1: shift and rotation invariance, gray value variations, and
    # elastic deformations from 10-pixel displacements on a coarse 3x3 grid, interpolated bicubically.
    "paper": Augmentation(flip_rotate=True, elastic_sigma=10.0, elastic_grid=3, brightness=0.1, contrast=0.1),
    "strong": Augmentation(
        flip_rotate=True, rotate_degrees=180.0, scale_range=(0.8, 1.25), elastic_sigma=10.0, elastic_grid=3,
        brightness=0.2, contrast=0.2, gamma=1.5, noise_std=0.1, blur_sigma=1.0,
    ),
}
AUGMENT_OPTIONS = tuple(f.name for f in dataclasses.fields(Augmentation))


def resolve_augment(preset: str, **overrides) -> Augmentation:
    """The preset ``preset`` with the options in ``overrides`` that are not None replacing its values.

    Args:
        preset: ``none``, ``light`` (flips and 90-degree rotations), ``paper`` or ``strong``.
        **overrides: Fields of :class:`Augmentation`, e.g. ``elastic_sigma=5``; None keeps the preset's.

    Raises:
        UnetkitError: An unknown preset or option, or a value out of range.

    Example:
        >>> resolve_augment("paper", elastic_sigma=5).elastic_sigma
        5.0
    """
    if preset not in PRESETS:
        raise UnetkitError(f"augment={preset!r} is not one of {', '.join(AUGMENTS)}")
    unknown = set(overrides) - set(AUGMENT_OPTIONS)
    if unknown:
        raise UnetkitError(f"unknown augmentation option(s) {sorted(unknown)}; options are {', '.join(AUGMENT_OPTIONS)}")
    values = {k: v for k, v in overrides.items() if v is not None}
    if "scale_range" in values:
        scale = tuple(float(v) for v in values["scale_range"])
        if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise UnetkitError(f"scale_range={list(scale)} must be two factors [low, high] with 0 < low <= high, e.g. [0.8, 1.25]")
        values["scale_range"] = scale
    for name in ("rotate_degrees", "elastic_sigma", "brightness", "noise_std", "blur_sigma"):
        if name in values and values[name] < 0:
            raise UnetkitError(f"{name} must be >= 0 (0 turns it off), got {values[name]}")
    if values.get("contrast", 0) < 0 or values.get("contrast", 0) >= 1:
        raise UnetkitError(f"contrast must be in [0, 1) (0 turns it off), got {values['contrast']}")
    if values.get("gamma", 1) < 1:
        raise UnetkitError(f"gamma must be >= 1 (1 turns it off), got {values['gamma']}")
    if values.get("elastic_grid", 3) < 2:
        raise UnetkitError(f"elastic_grid must be >= 2 points per side, got {values['elastic_grid']}")
    floats = {k: float(v) for k, v in values.items() if k not in ("flip_rotate", "hflip", "elastic_grid", "scale_range")}
    return dataclasses.replace(PRESETS[preset], **{**values, **floats})
