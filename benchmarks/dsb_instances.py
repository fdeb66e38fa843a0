"""Touching nuclei as separate objects on DSB 2018: a binary U-Net vs the three-class target + watershed.

Usage (from the repository root, with ../shared/data/dsb2018 present):
    python benchmarks/dsb_instances.py [--minutes 30] [--out runs/bench-dsb-instances]

Trains two U-Nets of the same size at the same time, as two processes with one thread each and the same
``--time`` budget, so both get the same share of a shared, noisy CPU: (a) ``--target semantic``
(nucleus vs background), (b) ``--target instances`` (background / interior / boundary where nuclei
touch). Both train on examples/dsb2018/dataset.yaml's ``train`` split (the 65 image ids ending in 5-f),
keep the best checkpoint on ``val`` (ids ending in 3-4) and are scored on the 20 held-out ``test`` ids
(ending in 0-2) by ``unetkit evaluate --split test --instances``: the objects of (a) are the 4-connected
components of its foreground, those of (b) the seeded watershed, whose ``--seed-threshold`` is the one
of 0.5, 0.6, ..., 0.9 with the best mean AP on ``val``; both with holes filled and objects under 16
pixels removed (the default of ``predict --instances``).

Rewrites the "dsb-instances" section of docs/benchmarks.md and docs/figures/dsb_instances.png.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from spine import ROOT, publish  # noqa: E402

import unetkit  # noqa: E402
from unetkit.data.dataset import load_spec, read_instances  # noqa: E402
from unetkit.data.io import atomic_write, read_image  # noqa: E402
from unetkit.inference.options import MIN_SIZE  # noqa: E402
from unetkit.instances import probabilities_to_instances, three_class_target  # noqa: E402
from unetkit.metrics.instances import average_precision  # noqa: E402

DSB = ROOT / "examples" / "dsb2018" / "dataset.yaml"
FIGURE = ROOT / "docs" / "figures" / "dsb_instances.png"
OPTIONS = dict(base_channels=32, depth=4, patch_size=128, batch_size=4, optimizer="adam", lr=1e-3, schedule="cosine",
               loss="weighted-ce+dice", augment="light", workers=0, threads=1, seed=0, tile=512, report=False, progress=False)  # fmt: skip
RUNS = (("binary", "semantic", "connected components of the foreground"), ("instances", "instances", "seeded watershed on the interior"))
FIGURE_IMAGES = 4
SEED_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
CROP = 256


def command(name: str, target: str, minutes: float, out: Path) -> list[str]:
    """The ``unetkit train`` arguments of one run."""
    args = ["train", "--data", str(DSB.relative_to(ROOT)), "--out", str(out / name), "--overwrite", "--time", f"{minutes:g}", "--target", target]
    for key, value in OPTIONS.items():
        args += [f"--{key.replace('_', '-')}", str(value).lower() if isinstance(value, bool) else str(value)]
    return args


def train_together(minutes: float, out: Path, train: bool = True) -> dict[str, dict]:
    """Start both trainings at once, wait for both (``train=False``: use the runs already in ``out``);
    returns per run its steps, epochs and wall minutes."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    procs = {}
    for name, target, _ in RUNS if train else ():
        log = open(out / f"{name}.log", "w")  # noqa: SIM115 - closed below
        procs[name] = (subprocess.Popen([sys.executable, "-m", "unetkit", *command(name, target, minutes, out)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), log)
    for name, (proc, log) in procs.items():
        code = proc.wait()
        log.close()
        if code != 0:
            raise SystemExit(f"{name} training failed (exit {code}); see {out / f'{name}.log'}")
    done = {}
    for name, _, _ in RUNS:
        with open(out / name / "metrics.csv", newline="") as f:
            last = list(csv.DictReader(f))[-1]
        done[name] = {"steps": int(last["step"]), "epochs": int(last["epoch"]), "minutes": float(last["time_s"]) / 60}
        print(f"{name}: {done[name]}", flush=True)
    print(f"both trained in {(time.monotonic() - started) / 60:.1f} min", flush=True)
    return done


def pick_seed_threshold(out: Path) -> tuple[float, dict[float, float]]:
    """The seed threshold of the instance model with the best mean AP on the val split, and the AP of each."""
    spec = load_spec(DSB, split="val")
    seg = unetkit.load(out / "instances" / "best.pt", device="cpu")
    cache = [(read_instances(p, spec), seg.predict_proba(read_image(p.image))) for p in spec.pairs]  # (truth, (3, H, W))
    scores = {}
    for t in SEED_THRESHOLDS:
        aps = [average_precision(truth, probabilities_to_instances(probs, "instances", seed_threshold=t)[0])["ap"] for truth, probs in cache]
        scores[t] = float(np.mean([a for a in aps if a is not None]))
    print(f"val mean AP by seed threshold: {scores}", flush=True)
    return max(scores, key=scores.get), scores


def crop_window(labels: np.ndarray, size: int) -> tuple[slice, slice]:
    """The ``size`` x ``size`` window (on a grid of half-size steps) holding the most boundary pixels between touching objects."""
    boundary = (three_class_target(labels) == 2).astype(np.int64)
    h, w = labels.shape
    best, window = -1, (slice(0, min(size, h)), slice(0, min(size, w)))
    for r in range(0, max(h - size, 0) + 1, size // 2):
        for c in range(0, max(w - size, 0) + 1, size // 2):
            count = int(boundary[r : r + size, c : c + size].sum())
            if count > best:
                best, window = count, (slice(r, r + size), slice(c, c + size))
    return window


def draw(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Objects in distinct colours over the image, outlined."""
    from skimage.color import label2rgb
    from skimage.segmentation import find_boundaries

    gray = image[..., :3].mean(axis=2) if image.ndim == 3 else image
    gray = (gray - gray.min()) / max(float(np.ptp(gray)), 1e-6)
    shuffled = np.zeros_like(labels)
    ids = np.unique(labels[labels > 0])
    shuffled[labels > 0] = np.random.default_rng(0).permutation(len(ids))[np.searchsorted(ids, labels[labels > 0])] + 1
    rgb = label2rgb(shuffled, image=gray, bg_label=0, alpha=0.45, image_alpha=1.0)
    rgb[find_boundaries(labels, mode="inner")] = (1.0, 1.0, 1.0)
    return rgb


def figure(out: Path, per_image: dict[str, dict], seed_threshold: float) -> list[str]:
    """Draw the test images with the most touching nuclei: image, truth, (a), (b). Returns their keys."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = load_spec(DSB, split="test")
    truths = {p.key: read_instances(p, spec) for p in spec.pairs}
    touching = {k: len(np.unique(t[three_class_target(t) == 2])) for k, t in truths.items()}
    chosen = sorted(truths, key=lambda k: (-touching[k], k))[:FIGURE_IMAGES]
    models = {name: unetkit.load(out / name / "best.pt", device="cpu") for name, _, _ in RUNS}
    fig, axes = plt.subplots(len(chosen), 4, figsize=(12, 3.1 * len(chosen)), dpi=100)
    for row, key in zip(axes, chosen):
        pair = next(p for p in spec.pairs if p.key == key)
        image, truth = read_image(pair.image), truths[key]
        window = crop_window(truth, CROP)
        panels = [("image " + key[:8], None), (f"truth: {int(truth.max())} nuclei, {touching[key]} touching", truth)]
        for name, target, _ in RUNS:
            labels = probabilities_to_instances(models[name].predict_proba(image), target, seed_threshold=seed_threshold)[0]
            ap = per_image[name][key]["ap"]
            panels.append((f"({'a' if name == 'binary' else 'b'}) {name}: {int(labels.max())} objects, AP {ap:.2f}", labels))
        for ax, (title, labels) in zip(row, panels):
            crop = image[window] if labels is None else draw(image[window], labels[window])
            ax.imshow(crop, cmap=None if crop.ndim == 3 else "gray")
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.suptitle("DSB 2018 test images (crops): (a) binary U-Net + connected components, (b) three-class target + watershed", fontsize=10)
    fig.tight_layout()
    with atomic_write(FIGURE) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return chosen


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="training time budget of each run (both run at once)")
    ap.add_argument("--out", default="runs/bench-dsb-instances")
    ap.add_argument("--evaluate-only", action="store_true", help="score the runs already in --out (trained with this --minutes)")
    args = ap.parse_args()
    out = Path(args.out)
    if not DSB.parent.joinpath(*[".."] * 3, "shared", "data", "dsb2018").resolve().is_dir():
        print("../shared/data/dsb2018 not found: nothing to measure", file=sys.stderr)
        return 1
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    trained = train_together(args.minutes, out, train=not args.evaluate_only)

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    seed_threshold, val_scores = pick_seed_threshold(out)
    results, per_image = {}, {}
    for name, _, _ in RUNS:
        results[name] = unetkit.evaluate(model=out / name / "best.pt", data=DSB, split="test", metrics="pixel", instances=True,
                                         seed_threshold=seed_threshold, json_path=out / f"{name}_test.json", device="cpu", progress=False)  # fmt: skip
        per_image[name] = {row["key"]: row for row in results[name]["per_image"]}
    chosen = figure(out, per_image, seed_threshold)

    spec = {s: len(load_spec(DSB, split=s).pairs) for s in ("train", "val", "test")}
    lines = [
        "## Instances: touching nuclei on DSB 2018",
        "",
        f"Command: `python benchmarks/dsb_instances.py --minutes {args.minutes:g} --out {out}` ({time.strftime('%Y-%m-%d')}; {machine}).",
        "",
        f"Data: examples/dsb2018/dataset.yaml, split by image id: the ids are 64-digit hexadecimal hashes and their last digit "
        f"picks the split: train 5-f ({spec['train']} images), val 3-4 ({spec['val']}, picks best.pt), test 0-2 "
        f"({spec['test']}, scored here, never seen in training).",
        "",
        "Both runs started together, as two processes with one thread each and the same budget, on a 2-core machine shared "
        "with other work:",
        "",
        *[f"    unetkit {' '.join(command(name, target, args.minutes, out))}" for name, target, _ in RUNS],
        "",
        f"then `unetkit evaluate --model {out}/NAME/best.pt --data {DSB.relative_to(ROOT)} --split test --instances --metrics pixel "
        f"--seed-threshold {seed_threshold:g}` (objects: holes filled, objects under {MIN_SIZE} px removed). The seed threshold "
        f"of (b) is the best on the val split: mean AP "
        + ", ".join(f"{a:.4f} at {t:g}" for t, a in val_scores.items()) + "; (a) has no such parameter.",
        "",
        "| run | objects from | steps (epochs) | AP@0.5 | mean AP (0.50-0.95) | AJI | predicted / true objects | splits | merges | foreground Dice |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (name, target, how), letter in zip(RUNS, "ab"):
        r, t = results[name], trained[name]
        inst = r["instances"]
        lines.append(
            f"| ({letter}) `--target {target}` | {how} | {t['steps']} ({t['epochs']}) | {inst['ap_per_threshold']['0.50']:.4f} | "
            f"{inst['ap']:.4f} | {inst['aji']:.4f} | {inst['pred_objects']} / {inst['true_objects']} | {inst['splits']} | "
            f"{inst['merges']} | {r['dice'][r['classes'][1]]:.4f} |"
        )
    lines += [
        "",
        "AP at IoU t is TP / (TP + FP + FN) with objects matched at IoU > t, per image, averaged over the test images "
        "(Data Science Bowl 2018); mean AP averages t = 0.50, 0.55, ..., 0.95. Splits: true nuclei with two or more "
        "predicted objects each lying mostly inside them; merges: predicted objects holding most of two or more true nuclei "
        "(summed over the test images).",
        "",
        f"![DSB 2018 test crops: (a) binary, (b) three-class + watershed](figures/{FIGURE.name})",
        "",
        f"The figure shows the {len(chosen)} test images with the most touching nuclei (256x256 crops where the truth has the "
        "most boundary between nuclei); objects in random colours, outlined in white. No distance-transform regression head was "
        "trained: the three-class target alone is measured here.",
    ]
    publish("dsb-instances", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
