"""Recipes: one folder per data set (``dataset.yaml`` + ``config.yaml``) run with one command.

``unetkit recipe examples/isbi2012`` trains the recipe's configuration on its data set, scores the best
checkpoint on the validation split, prints per-class IoU and Dice, and writes ``results.json``, an HTML
report and a figure of a few validation images (input, truth, prediction) into the run folder.
"""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import fields
from time import monotonic
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from unetkit.commands import RecipeOptions, TrainRun
from unetkit.config import make_config
from unetkit.data.dataset import DataSpec, load_spec, read_instances, read_pair
from unetkit.engine.resume import refuse_data_folder, refuse_taken_folder
from unetkit.engine.run_folder import RunFolder
from unetkit.engine.trainer import train
from unetkit.errors import UnetkitError
from unetkit.evaluation import evaluate
from unetkit.files import atomic_write
from unetkit.instances import probabilities_to_instances
from unetkit.loading import load_segmenter
from unetkit.outputs import refuse_unsafe_outputs
from unetkit.report import colorize, to_display
from unetkit.tracking import run_callbacks
from unetkit.yaml_files import read_yaml

RECIPE_OPTIONS = tuple(f.name for f in fields(RecipeOptions))

RECIPE_FILES = ("dataset.yaml", "config.yaml")


def recipe_files(recipe: str | Path) -> tuple[Path, Path]:
    """(dataset.yaml, config.yaml) of a recipe folder, or an error naming what is missing."""
    folder = Path(recipe)
    if not folder.is_dir():
        raise UnetkitError(f"{folder}: no such recipe folder; recipes are the folders of examples/ (e.g. examples/isbi2012)")
    missing = [name for name in RECIPE_FILES if not (folder / name).is_file()]
    if missing:
        raise UnetkitError(f"{folder}: not a recipe, {' and '.join(missing)} missing; a recipe folder holds {' and '.join(RECIPE_FILES)}")
    return folder / "dataset.yaml", folder / "config.yaml"


def relocated_dataset(dataset_yaml: Path, data: str | Path, out: Path) -> Path:
    """A copy of ``dataset_yaml`` in ``out`` whose images/masks folders are those of ``data`` (same layout).

    The recipe's yaml points at ``../shared/data/<set>/images`` and ``.../masks``; a user's copy of the
    set keeps the folder names, so ``data/images`` and ``data/masks`` replace them.
    """
    data = Path(data).expanduser().resolve()
    config = read_yaml(dataset_yaml) or {}
    for key in ("images", "masks"):
        folder = data / Path(config.get(key, key)).name
        if not folder.is_dir():
            raise UnetkitError(f"{data}: no {folder.name}/ folder; pass --data the data set folder that holds {config.get(key, key)!r}'s "
                               f"'{folder.name}/' (as in {dataset_yaml})")
        config[key] = str(folder)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "dataset.yaml"
    with atomic_write(target) as tmp:
        Path(tmp).write_text(f"# {dataset_yaml} with its data in {data}\n" + yaml.safe_dump(config, sort_keys=False))
    return target


def _random_colors(count: int, seed: int = 0) -> np.ndarray:
    """(count + 1, 3) uint8 distinct-ish colours for instance labels, black for 0."""
    rng = np.random.default_rng(seed)
    table = rng.integers(60, 256, (count + 1, 3)).astype(np.uint8)
    table[0] = 0
    return table


def figure(path: Path, rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], classes: list[str], colors: list, instances: bool) -> None:
    """A grid of validation images: input, truth and prediction per row, with a class legend, as a small PNG.

    Args:
        rows: ``(key, image, truth, prediction)``: (H, W, C) native image, (H, W) class indices (IGNORE
            shown black) or, with ``instances``, (H, W) object labels for truth and prediction.
    """
    # matplotlib takes about a second to import: only a recipe's figure pays for it.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    height = max(r[1].shape[0] / r[1].shape[1] for r in rows)
    fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.5 * height * len(rows) + 0.6), dpi=72, squeeze=False)
    for (key, image, truth, pred), ax in zip(rows, axes):
        key = key if len(key) <= 24 else "..." + key[-21:]  # the end of a long key tells images apart
        if instances:
            shown = [_random_colors(int(m.max(initial=0)), seed)[m] for seed, m in enumerate((truth, pred))]
            titles = (key, *(f"{what}: {len(np.unique(m)) - 1} objects" for what, m in (("truth", truth), ("prediction", pred))))
        else:
            shown = [colorize(truth, colors), colorize(pred, colors)]
            titles = (key, "truth", "prediction")
        for a, picture, title in zip(ax, [to_display(image), *shown], titles):
            a.imshow(picture, interpolation="nearest")
            a.set_title(title, fontsize=8)
            a.axis("off")
    if not instances:
        handles = [Patch(facecolor=np.asarray(c) / 255, edgecolor="0.5", label=name) for name, c in zip(classes, colors)]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(classes), 6), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.06 if not instances else 0, 1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    # A 128-colour palette PNG: a third of the size for figures committed to the repository (docs/gallery).
    small = Image.open(buffer).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        small.save(tmp, format="png", optimize=True)


def figure_rows(model: Path, spec: DataSpec, count: int) -> tuple[list, list[str], list, bool]:
    """Predictions of ``model`` on ``count`` images spread over the validation ``spec``, for :func:`figure`."""
    seg = load_segmenter(model)
    target = seg.meta.get("target", "semantic")
    step = max(len(spec.pairs) // count, 1)
    rows = []
    for pair in spec.pairs[::step][:count]:
        image, truth = read_pair(pair, spec)
        if target == "instances":
            probs = seg.predict_proba(image, str(pair.image))
            truth, pred = read_instances(pair, spec), probabilities_to_instances(probs, target)[0].astype(np.int64)
        else:
            pred = seg.predict_mask(image, str(pair.image)).astype(np.int64)
        rows.append((pair.key, image, truth, pred))
    return rows, list(spec.classes), [list(c) for c in spec.colors], target == "instances"


def format_results(results: dict) -> str:
    """Per-class IoU and Dice and their means, as a Markdown table."""
    val = results["validation"]
    lines = ["| class | IoU | Dice |", "|---|---:|---:|"]
    for name in results["classes"]:
        iou, dice = val["iou"].get(name), val["dice"].get(name)
        lines.append(f"| {name} | {'-' if iou is None else f'{iou:.3f}'} | {'-' if dice is None else f'{dice:.3f}'} |")
    lines.append(f"| **mean** | **{val['iou']['mean']:.3f}** | **{val['dice']['mean']:.3f}** |")
    if results.get("instances"):
        inst = results["instances"]
        lines.append(f"\nobjects: AP@0.5 {inst['ap_per_threshold']['0.50']:.3f}, mAP 0.5-0.95 {inst['ap']:.3f}, AJI {inst['aji']:.3f}")
    return "\n".join(lines)


def recipe(recipe: str | Path, **options) -> dict:
    """Train a recipe's configuration on its data set, score it on the validation split, draw a figure.

    Args:
        recipe: A recipe folder (``examples/<name>``) holding ``dataset.yaml`` and ``config.yaml``.
        data: The data set folder, when not where the recipe's ``dataset.yaml`` points (``../shared/data/<name>``
            beside the repository); it must hold the same ``images/`` and ``masks/`` folders.
        out: Run folder (default ``runs/<recipe name>``); the checkpoints go to ``out/run``.
        time: Training minutes instead of the recipe's ``time``.
        figure_path: Also copy the figure here (the gallery in docs/gallery/).
        figure_images: Validation images in the figure.
        progress: Show progress bars.
        command: The command line that ran this, recorded in results.json.
        **options: Those of :class:`~unetkit.commands.RecipeOptions` above; the others are training options
            overriding the recipe's config (``unetkit train`` names).

    Returns:
        The content of ``out/results.json``: recipe, classes, training minutes, validation IoU/Dice per
        class and mean, instance scores for ``target: instances`` recipes, and the reproducing command.
    """
    o = RecipeOptions.build("recipe", recipe=recipe, **{k: options.pop(k) for k in RECIPE_OPTIONS if k in options})
    data, out, time, progress, figure_path, command = o.data, o.out, o.time, o.progress, o.figure_path, o.command
    dataset, config = recipe_files(recipe)
    name = Path(recipe).resolve().name
    out = Path(out or Path("runs") / name)
    refuse_data_folder(out, data, dataset)
    if figure_path is not None:
        refuse_unsafe_outputs([(Path(figure_path), Path("the figure"))], [], "--figure-path", o.overwrite)
    if data is not None:
        dataset = relocated_dataset(dataset, data, out)
    try:
        train_pairs = len(load_spec(dataset, split="train").pairs)
    except UnetkitError as error:
        raise UnetkitError(f"{error} (recipe {recipe}: pass --data PATH where the {name} data set is)") from None
    started = monotonic()
    cfg = make_config(config, data=str(dataset), out=str(out / "run"), time=time, progress=progress, report=False, **options)
    refuse_taken_folder(RunFolder(cfg.out), TrainRun(overwrite=o.overwrite))  # an earlier run of the recipe is replaced only when asked
    with run_callbacks(cfg) as callbacks:  # the trackers of the recipe's --log, if any
        result = train(cfg, callbacks=callbacks)
    train_minutes = result.seconds / 60
    best = RunFolder(cfg.out).best
    scores = evaluate(model=best, data=dataset, split="val", json_path=out / "metrics.json", report_dir=out / "report", overwrite=True,
                      instances=cfg.target == "instances", progress=progress)
    val_spec = load_spec(dataset, split="val")
    rows, classes, colors, instances = figure_rows(best, val_spec, o.figure_images)
    figure(out / "figure.png", rows, classes, colors, instances)
    if figure_path is not None:
        Path(figure_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "figure.png", figure_path)
    results = {
        "recipe": name,
        "classes": list(val_spec.classes),
        "train_pairs": train_pairs,
        "val_pairs": len(val_spec.pairs),
        "train_minutes": round(train_minutes, 2),
        "total_minutes": round((monotonic() - started) / 60, 2),
        "epochs": result.epochs,
        "steps": result.steps,
        "validation": {"iou": scores["iou"], "dice": scores["dice"], "pixel_accuracy": scores["pixel_accuracy"]["overall"]},
        "instances": scores.get("instances"),
        "command": command,
    }
    with atomic_write(out / "results.json") as tmp:
        Path(tmp).write_text(json.dumps(results, indent=2))
    return results
