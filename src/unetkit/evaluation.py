"""``unetkit evaluate``: score a model or saved predictions with the metric families of ``unetkit.metrics``.

Every image is reduced to counts (a confusion matrix, contour counts, ISBI counts per threshold,
object scores) as it streams past, so evaluation holds one image at a time; the counts are summed or
averaged over images at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import yaml
from tqdm.auto import tqdm

from unetkit.data.checks import read_config, run_checks
from unetkit.data.dataset import IGNORE, DataSpec, Pair, decode_mask, load_spec, read_instances, read_pair
from unetkit.data.folders import scan_folder
from unetkit.data.io import atomic_write, read_image, read_mask_raw
from unetkit.commands import METRIC_GROUPS, EvaluateOptions
from unetkit.errors import UnetkitError
from unetkit.inference.options import InferenceOptions
from unetkit.inference.predictor import Segmenter, probabilities_to_mask
from unetkit.instances import model_target, probabilities_to_instances, segment_instances
from unetkit.loading import load_segmenter, model_sources
from unetkit.metrics import confusion_matrix, scores
from unetkit.metrics.boundary import boundary_counts, boundary_f1, hd95
from unetkit.metrics.instances import AP_THRESHOLDS, aggregated_jaccard, average_precision, split_merge_counts
from unetkit.metrics.isbi import THRESHOLDS, components, isbi_counts, isbi_errors
from unetkit.outputs import refuse_unsafe_folder, refuse_unsafe_outputs
from unetkit.report import ReportWriter

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


def _masks_spec(masks: Path, config: dict, where: Path) -> DataSpec:
    """The masks under ``masks`` alone as a data set, read by :func:`unetkit.data.dataset.load_spec` from a yaml that
    names the folder for both images and masks (so each mask stands in for its image), with the mask options of the
    data set's yaml ``config`` (at ``where``)."""
    if not scan_folder(masks).files:
        raise UnetkitError(f"--truth {masks}: no mask files; pass a folder of ground-truth masks, or a data set folder with masks/")
    options = {key: value for key, value in config.items() if key in ("classes", "mask_mode", "ignore_value", "ignore_colors")}
    with tempfile.TemporaryDirectory(prefix="unetkit-truth-") as folder:
        stand_in = Path(folder) / "dataset.yaml"
        stand_in.write_text(yaml.safe_dump({**options, "images": str(masks.resolve()), "masks": str(masks.resolve())}))
        try:
            return load_spec(stand_in)
        except UnetkitError as e:  # a problem with the options: name the user's yaml
            raise UnetkitError(str(e).replace(str(stand_in), str(where))) from None


def truth_spec(truth: str | Path) -> tuple[DataSpec, Path]:
    """The ground truth of ``--truth`` and its folder: a data set (its folder, ``dataset.yaml`` or ``masks/`` folder)
    or a plain folder of masks.

    A data set with an images folder is read by :func:`unetkit.data.dataset.load_spec` (its images go into the
    report). Without one the masks alone are the truth: those of the masks folder (``masks/``, or the yaml's
    ``masks:``) when there is one, else every mask file under the folder, decoded with the yaml's options.
    """
    path = Path(truth)
    if not path.exists():
        raise UnetkitError(f"--truth {path}: not found; pass a folder of ground-truth masks, or a data set folder with masks/")
    if path.is_file():
        return load_spec(path), path.parent  # a dataset.yaml
    if path.name == "masks" and ((path.parent / "images").is_dir() or (path.parent / "dataset.yaml").is_file()):
        path = path.parent
    root, config, where = run_checks(read_config(path))
    if (root / str(config.get("images", "images"))).is_dir():
        return load_spec(path), root
    masks = root / str(config.get("masks", "masks"))
    return _masks_spec(masks if masks.is_dir() else root, config, where), root


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
        probs = seg.predict_proba(image, str(pair.image))  # (K, H, W)
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


def find_predictions(pred_dir: Path, keys: list[str]) -> dict[str, Path]:
    """The saved prediction of each truth key: the file ``KEY`` with any image extension (``.png`` as ``unetkit predict``
    writes it, ``.tif`` as ``predict --stream`` does, ...) under ``pred_dir``; other files there are not looked at.

    Raises:
        UnetkitError: The folder is missing, a key has no prediction, or two files are one key's (``a.png`` and ``a.tif``).
    """
    if not pred_dir.is_dir():
        raise UnetkitError(f"--pred {pred_dir}: predictions folder not found; write it with unetkit predict")
    scan = scan_folder(pred_dir)
    for kept, other in scan.duplicates:
        key = kept.relative_to(pred_dir).with_suffix("").as_posix()
        if key in keys:
            raise UnetkitError(f"{kept} and {other} are both predictions for the truth mask {key}; keep one of them (move the other away)")
    missing = [key for key in keys if key not in scan.files]
    if missing:
        raise UnetkitError(f"--pred {pred_dir}: no prediction for {len(missing)} truth mask(s), e.g. {missing[0]} (as {missing[0]}.png "
                           f"or .tif); predict every image of the data set")  # fmt: skip
    return {key: scan.files[key] for key in keys}


def decode_prediction(raw: np.ndarray, name: str, num_classes: int, instance_model: bool = False) -> np.ndarray:
    """The raw pixels of a saved prediction as ``(H, W)`` int64 class indices ``0..num_classes - 1``.

    Class indices are taken as they are. Against binary truth (2 classes) every binary encoding means
    background and foreground: values within {0, 1}, {0, 255} or {0, the largest value of the file's type}
    (a 1-bit PNG, a 0/255 PNG, a 0/65535 TIFF), and, with ``instance_model``, the background, interior and
    boundary indices 0, 1, 2 of a model trained with ``--target instances``. Anything else, e.g. index 2
    of a three-class model, is refused.

    Raises:
        UnetkitError: A colour image, non-integer or negative values, or an index the truth's classes cannot hold.

    Example:
        >>> decode_prediction(np.array([[0, 255, 255]], np.uint8), "a.png", 2)
        array([[0, 1, 1]])
    """
    if raw.ndim != 2:
        raise UnetkitError(f"{name} is a colour image; a prediction holds one class index per pixel, as unetkit predict writes it")
    if raw.dtype.kind not in "buif" or (raw.dtype.kind == "f" and not np.array_equal(raw, np.round(raw))):  # NaN fails too
        raise UnetkitError(f"{name} has non-integer values; a prediction holds class indices (threshold probabilities first, "
                           "or put them in NAME_prob.tif beside it)")  # fmt: skip
    labels = raw.astype(np.int64)
    low, high = int(labels.min(initial=0)), int(labels.max(initial=0))
    if low < 0:
        raise UnetkitError(f"{name} has the negative value {low}; a prediction holds class indices 0..{num_classes - 1}")
    if high < num_classes:
        return labels
    if num_classes == 2:
        largest = np.iinfo(raw.dtype).max if raw.dtype.kind in "ui" else None
        two_valued = high in (255, largest) and not np.any((labels != 0) & (labels != high))
        if two_valued or (instance_model and high == 2):
            return (labels > 0).astype(np.int64)
        hint = ("; binary predictions may be 0/1 or 0/255, and the 0/1/2 of a --target instances model need NAME_instances.tif "
                "beside them (unetkit predict --instances)")  # fmt: skip
    else:
        hint = ""
    raise UnetkitError(f"{name}: class index {high} but the truth has {num_classes} classes; compare predictions of a model "
                       f"trained on this data{hint}")  # fmt: skip


def _probability(file: Path, k: int, shape: tuple[int, int]) -> np.ndarray:
    """The foreground probability (class 1) of ``NAME_prob.tif``: (K, H, W) from ``predict --probabilities``, or
    (H, W, K) from ``predict --stream --probabilities``."""
    probs = read_image(file)  # (H, W, K) either way
    if probs.shape != (*shape, k):
        raise UnetkitError(f"{file}: {probs.shape[2]} band(s) of {probs.shape[0]}x{probs.shape[1]} pixels, expected {k} of "
                           f"{shape[0]}x{shape[1]}; rewrite it with unetkit predict --probabilities")  # fmt: skip
    if probs.dtype.kind != "f" or probs.min(initial=0) < 0 or probs.max(initial=0) > 1:
        raise UnetkitError(f"{file}: not probabilities (type {probs.dtype}, values {probs.min()}..{probs.max()}); expected float "
                           "values in 0..1; rewrite it with unetkit predict --probabilities")  # fmt: skip
    return probs[..., 1]


def _objects(file: Path, shape: tuple[int, int], truth: Path) -> np.ndarray:
    """The object labels of ``NAME_instances.tif`` (``predict --instances``) as (H, W) int64."""
    objects = read_mask_raw(file)
    if objects.shape != shape:
        raise UnetkitError(f"{file}: shape {objects.shape} differs from its truth {truth} {shape}; rewrite it with unetkit predict --instances")
    if objects.dtype.kind not in "bui" or objects.min(initial=0) < 0:
        raise UnetkitError(f"{file}: object labels of type {objects.dtype}, from {objects.min()}; expected integer labels >= 0, 0 for background; "
                           "rewrite it with unetkit predict --instances")  # fmt: skip
    return objects.astype(np.int64)


def file_samples(predictions: dict[str, Path], spec: DataSpec, groups: tuple[str, ...], images: bool, post: dict | None = None) -> Iterator[Sample]:
    """Read the saved prediction of every pair of ``spec`` (``predictions``: key -> file, see :func:`find_predictions`).

    The pixel prediction is the file itself, decoded by :func:`decode_prediction`, whatever the metric families.
    ``NAME_prob.tif`` beside it gives the isbi sweep its probabilities. For the instance metrics ``NAME_instances.tif``
    (from ``unetkit predict --instances``) gives the objects when present; otherwise they are those of
    :func:`unetkit.instances.segment_instances` on the prediction's foreground (options ``post``).
    """
    k = spec.num_classes
    for index, pair in enumerate(spec.pairs):
        file = predictions[pair.key]
        mask = decode_mask(pair, spec)
        raw = read_mask_raw(file)
        if raw.shape[:2] != mask.shape:
            raise UnetkitError(f"{file}: shape {raw.shape[:2]} differs from its truth {pair.mask} {mask.shape}; predict at the image's size")
        objects_file = file.with_name(file.stem + "_instances.tif")
        p = decode_prediction(raw, str(file), k, instance_model=objects_file.is_file())
        objects = None
        if "instances" in groups:
            if objects_file.is_file():
                objects = _objects(objects_file, mask.shape, pair.mask)
            elif k == 2:
                options = {key: v for key, v in (post or {}).items() if key != "seed_threshold"}
                objects = segment_instances((p > 0).astype(np.float32), **options)
        prob_file = file.with_name(file.stem + "_prob.tif")
        probability = _probability(prob_file, k, mask.shape) if "isbi" in groups and prob_file.is_file() else None
        yield Sample(
            pair.key, mask, p, probability=probability,
            truth_instances=read_instances(pair, spec) if "instances" in groups else None,
            pred_instances=objects,
            image=read_image(pair.image) if images and index < REPORT_IMAGES and pair.image != pair.mask else None,
        )


def _publish(stage: Path, report: Path) -> None:
    """Move the finished report from ``stage`` into ``report``: renamed when new, else file by file over the old report's."""
    if not report.exists():
        report.parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage, report)
        return
    for file in sorted(p for p in stage.rglob("*") if p.is_file()):
        target = report / file.relative_to(stage)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(file, target)
    shutil.rmtree(stage, ignore_errors=True)


def run_evaluation(samples: Iterable[Sample], classes: list[str], colors: list, groups: tuple[str, ...], tolerance: float = 2.0,
                   json_path: str | Path | None = None, report: str | Path | None = None, curves: Path | None = None) -> dict:
    """Score ``samples``; write the JSON and the HTML report when asked. Returns the result.

    The report is built in ``.NAME.partial`` in the nearest existing folder above ``report`` and moved into
    place once complete, so a sample that fails halfway leaves no partial report, no JSON and no new folder.
    """
    report = Path(report) if report is not None else None
    stage = None
    if report is not None:
        anchor = next(folder for folder in report.resolve().parents if folder.is_dir())
        stage = anchor / f".{report.resolve().name or 'report'}.partial"
    if stage is not None and stage.exists():
        shutil.rmtree(stage)  # what an interrupted run left
    try:
        writer = ReportWriter(stage, classes, colors) if stage is not None else None
        stats = []
        for sample in samples:
            stats.append(score_image(sample, len(classes), groups, tolerance))
            if writer is not None and sample.image is not None:
                writer.add_image(sample.key, sample.image, sample.truth, sample.pred)
        if not stats:
            raise UnetkitError("nothing to evaluate: the data set has no labelled pairs")
        result = summarize(stats, classes, groups, tolerance)
        if writer is not None:
            writer.finish(result, curves)
    except BaseException:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
        raise
    if json_path is not None:
        with atomic_write(json_path) as tmp:
            Path(tmp).write_text(json.dumps(result, indent=2))
    if stage is not None:
        _publish(stage, report)
    return result


def _refuse_unsafe_outputs(o: EvaluateOptions, folders: list[Path], files: Iterable[Path]) -> None:
    """The scores file and the report folder may replace no input, nor (without ``--overwrite``) an earlier file; the
    report may not go among the images, masks or predictions."""
    models = model_sources(o.model) if o.model is not None else []  # an ensemble's files too
    files = list(files)
    if o.json_path is not None:
        refuse_unsafe_outputs([(Path(o.json_path), Path("the scores"))], files, "--json-path", o.overwrite, models, named=True)
    if o.report_dir is not None:
        refuse_unsafe_folder(o.report_dir, [*files, *models], "--report-dir", o.overwrite, folders)


def evaluate(**options) -> dict:
    """Score a model on a labelled data set (``model`` + ``data``) or saved predictions (``pred`` + ``truth``).

    ``options`` are those of :class:`~unetkit.commands.EvaluateOptions` (``unetkit evaluate --help``); the
    model runs as its :class:`~unetkit.inference.options.InferenceOptions` say.

    Args:
        pred: Folder of saved predictions, ``KEY.png`` or ``KEY.tif`` (any image type) per truth mask: class
            indices, or for binary truth any binary encoding (0/1, 0/255, 1-bit), see :func:`decode_prediction`.
        truth: The ground truth: a data set (folder, ``dataset.yaml`` or ``masks/`` folder) or a plain folder of masks.
        metrics: Families to compute (``"pixel,boundary,isbi,instances"`` or a list). Default: pixel
            and boundary, plus isbi for binary data, plus instances for a model trained with
            ``target="instances"``. Pixel scores are always included, and never depend on the others.
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
        if run is None and isinstance(o.model, (str, Path)) and "ensemble" not in seg.meta:  # an ensemble has no one run
            run = Path(o.model).parent
        _refuse_unsafe_outputs(o, [spec.root], [*(p.image for p in spec.pairs), *(p.mask for p in spec.pairs)])
        samples = model_samples(seg, spec, spec.pairs, groups, report is not None, o.progress, post)
    elif o.pred is not None and o.truth is not None and o.model is None and o.data is None:
        spec, truth_root = truth_spec(o.truth)
        groups = resolve_metrics(o.metrics, spec.classes)
        if o.instances and "instances" not in groups:
            groups = resolve_metrics([*groups, "instances"], spec.classes)
        predictions = find_predictions(Path(o.pred), [pair.key for pair in spec.pairs])
        _refuse_unsafe_outputs(o, [Path(o.pred), truth_root],
                                   [*predictions.values(), *(p.image for p in spec.pairs), *(p.mask for p in spec.pairs)])  # fmt: skip
        samples = file_samples(predictions, spec, groups, report is not None, post)
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
