"""The public API. Each CLI command is a thin call of one function here, with the same option names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from unetkit.config import make_config
from unetkit.data.dataset import IGNORE, DataSpec, decode_mask, load_spec, read_pair
from unetkit.data.io import IMAGE_EXTENSIONS, atomic_write, read_image, read_mask_raw, write_png, write_tiff
from unetkit.engine.trainer import TrainResult
from unetkit.errors import UnetkitError
from unetkit.inference.predictor import DEFAULT_TILE, Segmenter, softmax
from unetkit.metrics import confusion_matrix, scores


def train(config: str | Path | None = None, **options) -> TrainResult:
    """Train a U-Net; options are those of ``unetkit.config.TrainConfig`` (``unetkit train --help``).

    Example:
        >>> unetkit.train(data="data/", out="runs/exp1", time=10, base_channels=32)
    """
    from unetkit.engine.trainer import train as run

    return run(make_config(config, **options))


def load(model: str | Path, device: str = "auto", tile: int = DEFAULT_TILE, batch_size: int = 4, precision: str = "fp32") -> Segmenter:
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


def _segmenter(model, device: str, tile: int, batch_size: int, precision: str) -> Segmenter:
    if isinstance(model, Segmenter):
        return model
    return load(model, device=device, tile=tile, batch_size=batch_size, precision=precision)


def predict(
    model: str | Path | Segmenter,
    inputs: list[str | Path] | str | Path,
    out: str | Path,
    tile: int = DEFAULT_TILE,
    batch_size: int = 4,
    probabilities: bool = False,
    overlay: bool = False,
    device: str = "auto",
    precision: str = "fp32",
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

    seg = _segmenter(model, device, tile, batch_size, precision)
    items = _inputs([inputs] if isinstance(inputs, (str, Path)) else list(inputs))
    out = Path(out)
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


def _truth_spec(truth: str | Path) -> DataSpec:
    """The data set whose masks are the truth: ``DATA`` or ``DATA/masks`` (its parent then)."""
    path = Path(truth)
    if path.is_dir() and path.name == "masks" and (path.parent / "images").is_dir():
        path = path.parent
    return load_spec(path)


def _score_images(pairs_pred_truth, classes: list[str]) -> dict:
    """Sum confusion matrices over (key, pred, truth) and score both the total and each image."""
    k = len(classes)
    total = np.zeros((k, k), np.int64)
    per_image = []
    for key, pred, truth in pairs_pred_truth:
        cm = confusion_matrix(pred, truth, k, IGNORE)
        total += cm
        s = scores(cm, classes)
        per_image.append({"key": key, "dice": s["dice"]["mean"], "iou": s["iou"]["mean"], "pixel_accuracy": s["pixel_accuracy"]["overall"]})
    result = scores(total, classes)
    result["per_image"] = per_image
    result["confusion_matrix"] = total.tolist()
    result["classes"] = classes
    return result


def evaluate(
    model: str | Path | Segmenter | None = None,
    data: str | Path | None = None,
    pred: str | Path | None = None,
    truth: str | Path | None = None,
    json_path: str | Path | None = None,
    report: str | Path | None = None,
    split: str | None = None,
    run: str | Path | None = None,
    tile: int = DEFAULT_TILE,
    batch_size: int = 4,
    device: str = "auto",
    precision: str = "fp32",
    progress: bool = True,
) -> dict:
    """Score a model on a labelled data set (``model`` + ``data``) or saved predictions (``pred`` + ``truth``).

    Scores come from the confusion matrix summed over all images: per class and mean Dice, IoU,
    precision, recall and pixel accuracy (see :func:`unetkit.metrics.scores`), plus ``per_image``
    mean scores and the ``confusion_matrix``. ``json_path`` writes them as JSON; ``report`` writes an
    HTML report folder, with the training curves of ``run`` (default: the model's run folder).
    """
    from unetkit.report import write_report

    visuals = []
    if model is not None and data is not None and pred is None and truth is None:
        seg = _segmenter(model, device, tile, batch_size, precision)
        spec = load_spec(data, split=split)
        if spec.num_classes != len(seg.classes):
            raise UnetkitError(f"{data}: {spec.num_classes} classes but the model predicts {len(seg.classes)} ({', '.join(seg.classes)}); evaluate on data with the model's classes")
        if run is None and isinstance(model, (str, Path)):
            run = Path(model).parent

        def triples():
            for pair in tqdm(spec.pairs, desc="evaluate", unit="img", disable=not progress or len(spec.pairs) < 2):
                image, mask = read_pair(pair, spec)
                seg.check_image(image, str(pair.image))
                p = seg.predict_mask(image).astype(np.int64)
                if report is not None and len(visuals) < 8:
                    visuals.append({"key": pair.key, "image": image, "truth": mask, "pred": p, "colors": seg.colors, "classes": seg.classes})
                yield pair.key, p, mask

        result = _score_images(triples(), seg.classes)
    elif pred is not None and truth is not None and model is None and data is None:
        spec = _truth_spec(truth)
        pred_dir = Path(pred)
        if not pred_dir.is_dir():
            raise UnetkitError(f"{pred_dir}: predictions folder not found; write it with unetkit predict")
        predictions = {
            p.relative_to(pred_dir).with_suffix("").as_posix(): p
            for p in pred_dir.rglob("*.png")
            if not p.stem.endswith(("_overlay",))
        }
        missing = [pair.key for pair in spec.pairs if pair.key not in predictions]
        if missing:
            raise UnetkitError(f"{pred_dir}: no prediction for {len(missing)} truth mask(s), e.g. {missing[0]}.png; predict every image of the data set")
        classes = spec.classes

        def triples():
            for pair in spec.pairs:
                mask = decode_mask(pair, spec)
                p = read_mask_raw(predictions[pair.key]).astype(np.int64)
                if p.shape != mask.shape:
                    raise UnetkitError(f"{predictions[pair.key]}: shape {p.shape} differs from its truth {pair.mask} {mask.shape}; predict at the image's size")
                if p.max(initial=0) >= len(classes):
                    raise UnetkitError(f"{predictions[pair.key]}: class index {int(p.max())} but the truth has {len(classes)} classes; compare predictions of a model trained on this data")
                if report is not None and len(visuals) < 8:
                    visuals.append({"key": pair.key, "image": read_image(pair.image), "truth": mask, "pred": p, "colors": spec.colors, "classes": classes})
                yield pair.key, p, mask

        result = _score_images(triples(), classes)
    else:
        raise UnetkitError("evaluate needs either --model with --data, or --pred with --truth")

    if json_path is not None:
        with atomic_write(json_path) as tmp:
            Path(tmp).write_text(json.dumps(result, indent=2))
    if report is not None:
        write_report(report, result, visuals, Path(run) / "curves.png" if run is not None else None)
    return result
