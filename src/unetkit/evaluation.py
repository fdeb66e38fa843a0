"""``unetkit evaluate``: score a model or saved predictions with the metric families of ``unetkit.metrics``.

Every image is reduced to counts (a confusion matrix, contour counts, ISBI counts per threshold,
object scores) as it streams past, so evaluation holds one image at a time; the counts are summed or
averaged over images at the end.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import tifffile
from tqdm.auto import tqdm

from unetkit.data.dataset import IGNORE, DataSpec, Pair, decode_mask, load_spec, read_instances, read_pair
from unetkit.data.io import atomic_write, read_image, read_mask_raw
from unetkit.commands import METRIC_GROUPS, EvaluateOptions
from unetkit.errors import UnetkitError
from unetkit.inference.options import InferenceOptions
from unetkit.inference.predictor import Segmenter, probabilities_to_mask
from unetkit.instances import model_target, probabilities_to_instances, segment_instances
from unetkit.loading import load_segmenter
from unetkit.metrics import confusion_matrix, scores
from unetkit.metrics.boundary import boundary_counts, boundary_f1, hd95
from unetkit.metrics.instances import AP_THRESHOLDS, aggregated_jaccard, average_precision, split_merge_counts
from unetkit.metrics.isbi import THRESHOLDS, components, isbi_counts, isbi_errors
from unetkit.report import ReportWriter

#: Metric families ``--metrics`` can name.
#: Images drawn in a report; the per-image table lists them all.
REPORT_IMAGES = 100


@dataclass
class Sample:
    """One image to score: truth and prediction, plus what the chosen metrics and the report need."""

    key: str
    truth: np.ndarray  # (H, W) int64 class indices, IGNORE where ignored
    pred: np.ndarray  # (H, W) int64 class indices
    probability: np.ndarray | None = None  # (H, W) foreground probability (binary data, isbi)
    truth_instances: np.ndarray | None = None  # (H, W) object ids (instances)
    pred_instances: np.ndarray | None = None  # (H, W) predicted object ids; None: 4-connected components of pred > 0
    image: np.ndarray | None = None  # (H, W, C) input (report)


def resolve_metrics(metrics: str | Iterable[str] | None, classes: list[str]) -> tuple[str, ...]:
    """The metric families to compute, in :data:`METRIC_GROUPS` order; ``pixel`` is always included.

    Default: pixel and boundary, plus isbi for binary (2-class) data. ``metrics`` is a list or a
    comma-separated string such as ``"pixel,isbi,instances"``.
    """
    if metrics is None:
        chosen = {"pixel", "boundary"} | ({"isbi"} if len(classes) == 2 else set())
    else:
        names = [m.strip() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
        unknown = [m for m in names if m not in METRIC_GROUPS]
        if unknown:
            raise UnetkitError(f"unknown metric family {unknown[0]!r}; choose from {', '.join(METRIC_GROUPS)} (e.g. --metrics pixel,boundary)")
        chosen = set(names) | {"pixel"}
    if "isbi" in chosen and len(classes) != 2:
        raise UnetkitError(
            f"the isbi metrics need binary data (background and one foreground class) but the data has {len(classes)} "
            f"classes ({', '.join(classes)}); drop isbi from --metrics"
        )
    return tuple(m for m in METRIC_GROUPS if m in chosen)


def score_image(sample: Sample, num_classes: int, groups: tuple[str, ...], tolerance: float) -> dict:
    """The counts and scores of one image that :func:`summarize` aggregates."""
    truth, pred = sample.truth, sample.pred
    valid = truth != IGNORE
    stats: dict = {"key": sample.key, "cm": confusion_matrix(pred, truth, num_classes, IGNORE)}
    if "boundary" in groups:
        stats["boundary"] = np.stack([boundary_counts(pred == c, truth == c, tolerance, valid) for c in range(num_classes)])
        stats["hd95"] = [hd95(pred == c, truth == c, valid) for c in range(num_classes)]
    if "isbi" in groups:
        probability = sample.probability if sample.probability is not None else (pred == 1).astype(np.float32)
        stats["isbi"] = isbi_counts(truth == 1, probability, THRESHOLDS, valid)
    if "instances" in groups:
        predicted = components((pred > 0) & valid) if sample.pred_instances is None else np.where(valid, sample.pred_instances, 0)
        true = np.where(valid, sample.truth_instances, 0)
        stats["ap"] = average_precision(true, predicted)
        stats["aji"] = aggregated_jaccard(true, predicted)
        stats["objects"] = split_merge_counts(true, predicted)
    return stats


def _mean(values) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def _per_class(values: list, classes: list[str]) -> dict:
    return {**dict(zip(classes, values)), "mean": _mean(values)}


def summarize(stats: list[dict], classes: list[str], groups: tuple[str, ...], tolerance: float) -> dict:
    """Aggregate the :func:`score_image` results of all images into the evaluation result.

    Pixel scores and boundary F1 come from counts summed over images; HD95, average precision and
    AJI are means over the images where they are defined; ISBI errors come from counts summed per
    threshold, at the best threshold of each.
    """
    k = len(classes)
    total = sum((s["cm"] for s in stats), np.zeros((k, k), np.int64))
    result = scores(total, classes)
    per_image = []
    for s in stats:
        own = scores(s["cm"], classes)
        per_image.append({"key": s["key"], "dice": own["dice"]["mean"], "iou": own["iou"]["mean"], "pixel_accuracy": own["pixel_accuracy"]["overall"]})
    if "boundary" in groups:
        counts = sum((s["boundary"] for s in stats), np.zeros((k, 4), np.int64))
        result["boundary"] = {
            "tolerance": tolerance,
            "f1": _per_class([boundary_f1(c) for c in counts], classes),
            "hd95": _per_class([_mean(s["hd95"][c] for s in stats) for c in range(k)], classes),
        }
        for row, s in zip(per_image, stats):
            row["boundary_f1"] = _mean(boundary_f1(c) for c in s["boundary"])
            row["hd95"] = _mean(s["hd95"])
    if "isbi" in groups:
        errors = isbi_errors(sum(s["isbi"] for s in stats), THRESHOLDS)
        result["isbi"] = {"foreground": classes[1], **errors, "threshold_sweep": list(THRESHOLDS)}
        for row, s in zip(per_image, stats):
            for name, t in errors["thresholds"].items():  # each image at the threshold best for the set
                row[name] = isbi_errors(s["isbi"][[THRESHOLDS.index(t)]], (t,))[name]
    if "instances" in groups:
        result["instances"] = {
            "ap": _mean(s["ap"]["ap"] for s in stats),
            "ap_per_threshold": {f"{t:.2f}": _mean(s["ap"]["per_threshold"][f"{t:.2f}"] for s in stats) for t in AP_THRESHOLDS},
            "aji": _mean(s["aji"] for s in stats),
            **{k: sum(s["objects"][k] for s in stats) for k in ("true_objects", "pred_objects", "splits", "merges")},
        }
        for row, s in zip(per_image, stats):
            row["ap"], row["aji"] = s["ap"]["ap"], s["aji"]
            row["splits"], row["merges"] = s["objects"]["splits"], s["objects"]["merges"]
    result["per_image"] = per_image
    result["confusion_matrix"] = total.tolist()
    result["classes"] = classes
    result["metrics"] = list(groups)
    return result


def _truth_spec(truth: str | Path) -> DataSpec:
    """The data set whose masks are the truth: ``DATA`` or ``DATA/masks`` (its parent then)."""
    path = Path(truth)
    if path.is_dir() and path.name == "masks" and (path.parent / "images").is_dir():
        path = path.parent
    return load_spec(path)


def model_scoring(seg: Segmenter, spec: DataSpec, metrics, instances: bool, where: str) -> tuple[list[str], list, tuple[str, ...]]:
    """(classes, colours, metric families) a model is scored in on ``spec``.

    A model trained with ``target="instances"`` (background, interior, boundary) is scored in the data's
    two classes, by its foreground, and its default families include instances.
    """
    target = model_target(seg.meta, where) if instances else seg.meta.get("target", "semantic")
    if target == "instances":
        if spec.num_classes != 2:
            raise UnetkitError(f"{where}: {spec.num_classes} classes but the model separates objects of one foreground class; evaluate on its instance or binary masks")
        classes, colors = list(spec.classes), list(spec.colors)
    elif spec.num_classes != len(seg.classes):
        raise UnetkitError(f"{where}: {spec.num_classes} classes but the model predicts {len(seg.classes)} ({', '.join(seg.classes)}); evaluate on data with the model's classes")
    else:
        classes, colors = list(seg.classes), list(seg.colors)
    groups = resolve_metrics(metrics, classes)
    if (instances or (metrics is None and target == "instances")) and "instances" not in groups:
        groups = resolve_metrics([*groups, "instances"], classes)
    return classes, colors, groups


def model_samples(seg: Segmenter, spec: DataSpec, pairs: list[Pair], groups: tuple[str, ...], images: bool, progress: bool,
                  post: dict | None = None) -> Iterator[Sample]:  # fmt: skip
    """Predict each pair with ``seg`` and yield it as a :class:`Sample`.

    A model trained with ``target="instances"`` is scored against the data's two classes by its foreground
    (interior + boundary); its objects, and those of a binary model, come from
    :func:`unetkit.instances.probabilities_to_instances` with the options ``post``.
    """
    target = seg.meta.get("target", "semantic")
    for index, pair in enumerate(tqdm(pairs, desc="evaluate", unit="img", disable=not progress or len(pairs) < 2)):
        image, mask = read_pair(pair, spec)
        seg.check_image(image, str(pair.image))
        probs = seg.predict_proba(image)  # (K, H, W)
        foreground = 1.0 - probs[0] if target == "instances" else probs[1]  # isbi: binary data only
        pred = (foreground > 0.5).astype(np.int64) if target == "instances" else probabilities_to_mask(probs).astype(np.int64)
        objects = None
        if "instances" in groups and (target == "instances" or len(probs) == 2):
            objects = probabilities_to_instances(probs, target, **(post or {}))[0]
        yield Sample(
            pair.key, mask, pred,
            probability=foreground if "isbi" in groups else None,
            truth_instances=read_instances(pair, spec) if "instances" in groups else None,
            pred_instances=objects,
            image=image if images and index < REPORT_IMAGES else None,
        )


def file_samples(pred_dir: Path, spec: DataSpec, groups: tuple[str, ...], images: bool, post: dict | None = None) -> Iterator[Sample]:
    """Read saved predictions (``KEY.png``, and ``KEY_prob.tif`` when present) for every pair of ``spec``.

    For the instance metrics, ``KEY_instances.tif`` (from ``unetkit predict --instances``) is the prediction
    when present: its objects, and for binary data its foreground; otherwise the objects are those of
    :func:`unetkit.instances.segment_instances` on the foreground of ``KEY.png`` (options ``post``).
    """
    if not pred_dir.is_dir():
        raise UnetkitError(f"{pred_dir}: predictions folder not found; write it with unetkit predict")
    predictions = {p.relative_to(pred_dir).with_suffix("").as_posix(): p for p in pred_dir.rglob("*.png") if not p.stem.endswith("_overlay")}
    missing = [pair.key for pair in spec.pairs if pair.key not in predictions]
    if missing:
        raise UnetkitError(f"{pred_dir}: no prediction for {len(missing)} truth mask(s), e.g. {missing[0]}.png; predict every image of the data set")
    k = spec.num_classes
    for index, pair in enumerate(spec.pairs):
        file = predictions[pair.key]
        mask = decode_mask(pair, spec)
        p = read_mask_raw(file).astype(np.int64)
        if p.shape != mask.shape:
            raise UnetkitError(f"{file}: shape {p.shape} differs from its truth {pair.mask} {mask.shape}; predict at the image's size")
        objects = None
        objects_file = file.with_name(file.stem + "_instances.tif")
        if "instances" in groups and objects_file.is_file():
            objects = tifffile.imread(objects_file).astype(np.int64)
            if objects.shape != mask.shape:
                raise UnetkitError(f"{objects_file}: shape {objects.shape} differs from its truth {pair.mask} {mask.shape}; rewrite it with unetkit predict --instances")
            if k == 2:  # e.g. background/interior/boundary in KEY.png: the objects' foreground is the prediction
                p = (objects > 0).astype(np.int64)
        if p.max(initial=0) >= k:
            hint = "; for a --target instances model, write NAME_instances.tif with unetkit predict --instances" if k == 2 else ""
            raise UnetkitError(f"{file}: class index {int(p.max())} but the truth has {k} classes; compare predictions of a model trained on this data{hint}")
        if "instances" in groups and objects is None and k == 2:
            options = {key: v for key, v in (post or {}).items() if key != "seed_threshold"}
            objects = segment_instances((p > 0).astype(np.float32), **options)
        probability = None
        prob_file = file.with_name(file.stem + "_prob.tif")
        if "isbi" in groups and prob_file.is_file():
            probs = tifffile.imread(prob_file)  # (K, H, W) from unetkit predict --probabilities
            if probs.shape != (k, *mask.shape):
                raise UnetkitError(f"{prob_file}: shape {probs.shape}, expected {(k, *mask.shape)}; rewrite it with unetkit predict --probabilities")
            probability = probs[1]
        yield Sample(
            pair.key, mask, p, probability=probability,
            truth_instances=read_instances(pair, spec) if "instances" in groups else None,
            pred_instances=objects,
            image=read_image(pair.image) if images and index < REPORT_IMAGES else None,
        )


def run_evaluation(samples: Iterable[Sample], classes: list[str], colors: list, groups: tuple[str, ...], tolerance: float = 2.0,
                   json_path: str | Path | None = None, report: str | Path | None = None, curves: Path | None = None) -> dict:
    """Score ``samples``; write the JSON and the HTML report when asked. Returns the result."""
    writer = ReportWriter(report, classes, colors) if report is not None else None
    stats = []
    for sample in samples:
        stats.append(score_image(sample, len(classes), groups, tolerance))
        if writer is not None and sample.image is not None:
            writer.add_image(sample.key, sample.image, sample.truth, sample.pred)
    if not stats:
        raise UnetkitError("nothing to evaluate: the data set has no labelled pairs")
    result = summarize(stats, classes, groups, tolerance)
    if json_path is not None:
        with atomic_write(json_path) as tmp:
            Path(tmp).write_text(json.dumps(result, indent=2))
    if writer is not None:
        writer.finish(result, curves)
    return result


def evaluate(**options) -> dict:
    """Score a model on a labelled data set (``model`` + ``data``) or saved predictions (``pred`` + ``truth``).

    ``options`` are those of :class:`~unetkit.commands.EvaluateOptions` (``unetkit evaluate --help``); the
    model runs as its :class:`~unetkit.inference.options.InferenceOptions` say.

    Args:
        metrics: Families to compute (``"pixel,boundary,isbi,instances"`` or a list). Default: pixel
            and boundary, plus isbi for binary data, plus instances for a model trained with
            ``target="instances"``. Pixel scores are always included.
        instances: Add the instance family: predicted objects as ``unetkit predict --instances`` makes
            them (watershed for ``target="instances"`` models, foreground components for binary ones;
            ``min_size``, ``seed_threshold`` and ``fill_holes`` as there), or read from
            ``NAME_instances.tif`` beside saved predictions. A model trained with
            ``target="instances"`` is scored against the data's two classes by its foreground.
        tolerance: Boundary F1 tolerance in pixels (default 2).
        json_path: Write the whole result here as JSON.
        report_dir: Write an HTML report into this folder (``index.html`` and its PNGs).
        run: Run folder whose ``curves.png`` goes into the report (default: the model's folder).
        split: A split of the data set's yaml (e.g. ``val``).

    Returns:
        Pixel scores from the confusion matrix summed over all images: per class and ``mean`` of
        ``dice``, ``iou``, ``precision``, ``recall`` and ``pixel_accuracy`` (with ``overall``), see
        :func:`unetkit.metrics.scores`; then ``boundary`` (``f1`` and ``hd95`` per class), ``isbi``
        (``pixel_error``, ``rand_error``, ``warping_error`` and their ``thresholds``) and
        ``instances`` (``ap``, ``ap_per_threshold``, ``aji``, and summed over images ``true_objects``,
        ``pred_objects``, ``splits`` and ``merges``, see :func:`unetkit.metrics.instances.split_merge_counts`)
        as chosen; ``per_image`` scores, the
        ``confusion_matrix`` (rows truth, columns prediction), ``classes`` and ``metrics``.

    Example:
        >>> unetkit.evaluate(model="runs/exp1/best.pt", data="data/", split="val", metrics="pixel,isbi")["isbi"]
    """
    o = EvaluateOptions.build("evaluate", **options)
    post = {"min_size": o.min_size, "seed_threshold": o.seed_threshold, "fill_holes": o.fill_holes}
    report, run = o.report_dir, o.run
    if o.model is not None and o.data is not None and o.pred is None and o.truth is None:
        seg = load_segmenter(o.model, InferenceOptions.pick(o))
        spec = load_spec(o.data, split=o.split)
        classes, colors, groups = model_scoring(seg, spec, o.metrics, o.instances, str(o.data))
        if run is None and isinstance(o.model, (str, Path)):
            run = Path(o.model).parent
        samples = model_samples(seg, spec, spec.pairs, groups, report is not None, o.progress, post)
    elif o.pred is not None and o.truth is not None and o.model is None and o.data is None:
        spec = _truth_spec(o.truth)
        groups = resolve_metrics(o.metrics, spec.classes)
        if o.instances and "instances" not in groups:
            groups = resolve_metrics([*groups, "instances"], spec.classes)
        samples = file_samples(Path(o.pred), spec, groups, report is not None, post)
        classes, colors = spec.classes, spec.colors
    else:
        raise UnetkitError("evaluate needs either --model with --data, or --pred with --truth")
    curves = Path(run) / "curves.png" if run is not None else None
    return run_evaluation(samples, list(classes), list(colors), groups, o.tolerance, o.json_path, report, curves)


def validation_report(run_dir: str | Path, spec: DataSpec, pairs: list[Pair], options: InferenceOptions, progress: bool) -> Path:
    """Evaluate ``run_dir/best.pt`` on the validation ``pairs`` into ``run_dir/report`` (as training does at its end),
    running the model as ``options`` say."""
    run_dir = Path(run_dir)
    seg = load_segmenter(run_dir / "best.pt", options)
    classes, colors, groups = model_scoring(seg, spec, None, False, str(run_dir))
    samples = model_samples(seg, spec, pairs, groups, True, progress)
    run_evaluation(samples, classes, colors, groups, report=run_dir / "report", curves=run_dir / "curves.png")
    return run_dir / "report" / "index.html"
