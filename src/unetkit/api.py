"""The public API. Each CLI command is a thin call of one function here, with the same option names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from unetkit.config import make_config
from unetkit.data.io import IMAGE_EXTENSIONS, probe_image, read_image, write_png, write_tiff
from unetkit.engine.trainer import TrainResult
from unetkit.errors import UnetkitError
from unetkit.evaluation import evaluate  # noqa: F401 - public as unetkit.evaluate
from unetkit.inference.predictor import DEFAULT_TILE, Segmenter, as_segmenter, softmax


def train(config: str | Path | None = None, resume: str | Path | None = None, force: bool = False, **options) -> TrainResult:
    """Train a U-Net; options are those of ``unetkit.config.TrainConfig`` (``unetkit train --help``).

    Args:
        config: A YAML file of options; ``options`` override it.
        resume: A run folder to continue from its ``last.pt`` (full state: weights, optimizer, RNG,
            position in the epoch); ``options`` may change the budget or learning rate.
        force: Resume even a run that stopped on a non-finite loss with the same learning rate.

    Example:
        >>> unetkit.train(data="data/", out="runs/exp1", time=10, base_channels=32)
    """
    from unetkit.engine.trainer import resume_config
    from unetkit.engine.trainer import train as run

    if resume is not None:
        if config is not None:
            raise UnetkitError("--resume takes the run's own config.yaml; drop --config (flags may still override options)")
        cfg, state = resume_config(resume, force=force, **options)
        return run(cfg, resume=state)
    return run(make_config(config, **options))


def load(model: str | Path, device: str = "auto", tile: int = DEFAULT_TILE, batch_size: int = 4, precision: str = "auto") -> Segmenter:
    """Load a checkpoint (``best.pt``/``last.pt``) as a :class:`Segmenter` ready to predict."""
    return Segmenter.from_checkpoint(model, device=device, tile=tile, batch_size=batch_size, precision=precision)


def _inputs(inputs: list[str | Path]) -> list[tuple[str, Path]]:
    """(output key, file) for every image in ``inputs`` (files, or folders searched recursively)."""
    found: list[tuple[str, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
            if not files:
                raise UnetkitError(f"{path}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
            found += [(p.relative_to(path).with_suffix("").as_posix(), p) for p in files]
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                raise UnetkitError(f"{path}: not an image file (expected {', '.join(sorted(IMAGE_EXTENSIONS))})")
            found.append((path.stem, path))
        else:
            raise UnetkitError(f"{path}: no such file or folder")
    keys = [k for k, _ in found]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise UnetkitError(f"two inputs would both write {dup}.png; pass them in separate runs or as one folder")
    return found


def predict(
    model: str | Path | Segmenter,
    inputs: list[str | Path] | str | Path,
    out: str | Path,
    tile: int = DEFAULT_TILE,
    batch_size: int = 4,
    probabilities: bool = False,
    overlay: bool = False,
    device: str = "auto",
    precision: str = "auto",
    progress: bool = True,
) -> list[Path]:
    """Segment images of any size with overlap-tile inference and write the results.

    For each input ``name``: ``out/name.png`` (class indices, the input's size); with ``probabilities``
    ``out/name_prob.tif`` (float32, (C, H, W)); with ``overlay`` ``out/name_overlay.png``. Inputs are
    image files or folders (searched recursively; sub-folders are kept in ``out``).

    Returns:
        The files written.
    """
    from unetkit.report import overlay as draw_overlay

    inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    items = _inputs(inputs)
    out = Path(out)
    for item in map(Path, inputs):
        if item.is_dir() and (out.resolve() == item.resolve() or item.resolve() in out.resolve().parents):
            raise UnetkitError(f"--out {out} is inside the input folder {item}; predictions would mix with the images, choose another --out")
    for _, path in items:  # every input is checked before any output is written
        probe_image(path)
    seg = as_segmenter(model, device, tile=tile, batch_size=batch_size, precision=precision)
    written: list[Path] = []
    for key, path in tqdm(items, desc="predict", unit="img", disable=not progress or len(items) < 2):
        image = read_image(path)
        seg.check_image(image, str(path))
        probs = softmax(seg.logits(image))  # (K, H, W)
        mask = probs.argmax(0).astype(np.uint8 if probs.shape[0] <= 256 else np.uint16)
        target = out / f"{key}.png"
        write_png(target, mask)
        written.append(target)
        if probabilities:
            written.append(out / f"{key}_prob.tif")
            write_tiff(written[-1], probs.astype(np.float32))
        if overlay:
            written.append(out / f"{key}_overlay.png")
            write_png(written[-1], draw_overlay(image, mask, seg.colors, seg.classes))
    return written


def check(
    data: str | Path,
    mask_mode: str = "auto",
    preview: str | Path | None = None,
    preview_count: int = 12,
    weights: str | Path | None = None,
    weight_w0: float = 10.0,
    weight_sigma: float = 5.0,
    progress: bool = True,
) -> dict:
    """Check a data set before training and report every problem, not just the first.

    Reports pairs found, images without mask and masks without image, size mismatches, unreadable
    files, bit depth and channels per image, the mask encoding with the values found, class pixel
    frequencies with suggested class weights, and empty masks. Each problem is one entry
    ``{"level": "error" | "warning", "file", "message"}`` whose message names the fix.

    Args:
        data: A data set folder or ``dataset.yaml``, as for ``train``.
        mask_mode: ``auto`` (the yaml's, then the rules of ``load_spec``), or a mode to force.
        preview: Write a PNG grid of the first ``preview_count`` images with their masks overlaid.
        weights: Write the paper's border weight map of every pair into this folder
            (``<key>.tif`` float32 and ``<key>.png`` picture), with ``weight_w0`` and ``weight_sigma``
            and the suggested class weights as ``w_c``.

    Returns:
        The report; ``report["usable"]`` is True when there is no error.

    Example:
        >>> report = unetkit.check("data/", preview="preview.png")  # doctest: +SKIP
        >>> report["usable"], report["mask_mode"], report["suggested_class_weights"]  # doctest: +SKIP
        (True, 'binary', [2.27, 0.64])
    """
    from unetkit.data.doctor import diagnose

    return diagnose(data, mask_mode, preview, preview_count, weights, weight_w0, weight_sigma, progress)
