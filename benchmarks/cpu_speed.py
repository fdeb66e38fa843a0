"""CPU speed against the hardware's peak and against peers, in one run (issue 6).

Usage (from the repository root):
    pip install -e ".[bench]"                      # MONAI and psutil beside unetkit
    python benchmarks/cpu_speed.py --setup-peers    # first time: makes benchmarks/.peers-venv for smp (torch 2.14.1 + torchvision)
    python benchmarks/cpu_speed.py [--size 4096] [--tta-minutes 20] [--skip-tta]

Measures, in this order and on the same inputs:
1. fp32 and bf16 GEMM peaks, so every figure is also a fraction of peak;
2. inference on a SIZE x SIZE image: ``unetkit predict`` (its defaults) vs the same ``nn.Module`` through
   MONAI's ``sliding_window_inference`` (fp32, overlap 0.25, gaussian), for the paper network and the default;
3. peers' default models at 512x512: smp ``Unet(resnet34)``, MONAI ``BasicUNet``, unetkit's default;
4. training images/s at 256x256 patches: ``unetkit.train`` vs a plain fp32 eager loop over the same network;
5. time to accuracy on ISBI 2012 (train slices 0-19, validate 20-24) with the default options.
Each inference and model measurement runs in its own process (benchmarks/_peer.py) so its peak RSS is its own.
Rewrites the "cpu-speed" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_inference import gemm_peak  # noqa: E402
from spine import ISBI, ROOT, publish  # noqa: E402

import unetkit  # noqa: E402
from unetkit.data.io import write_tiff  # noqa: E402
from unetkit.data.synthetic import make_dataset, synthetic_cells  # noqa: E402
from unetkit.engine.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from unetkit.models.config import input_size_for_output, output_size  # noqa: E402
from unetkit.models.unet import UNet
from unetkit.runtime import resolve_precision  # noqa: E402

PEERS_VENV = ROOT / "benchmarks" / ".peers-venv"
PEER = str(ROOT / "benchmarks" / "_peer.py")
NETWORKS = [("default (model_size cpu): base 32, depth 4", "cpu"), ("paper: base 64, depth 5", "paper")]


def setup_peers() -> None:
    """The smp venv: torch 2.14.1 + torchvision 0.29.1 (torchvision does not import beside torch 2.13)."""
    subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    pip = [str(PEERS_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.14.1", "torchvision==0.29.1"], check=True)
    subprocess.run([*pip, "segmentation-models-pytorch", "psutil"], check=True)


def run_peer(python: str, *args: str) -> dict:
    done = subprocess.run([python, PEER, *args], capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def big_image(size: int, seed: int = 0) -> np.ndarray:
    """A SIZE x SIZE cell image: 512x512 synthetic blocks, each mirrored differently, so tiles do not repeat exactly."""
    rng = np.random.default_rng(seed)
    blocks = [synthetic_cells((512, 512), rng)[0] for _ in range(4)]
    n = -(-size // 512)
    rows = [np.concatenate([blocks[(r * n + c) % 4][:: 1 - 2 * (r % 2), :: 1 - 2 * (c % 2)] for c in range(n)], 1) for r in range(n)]
    return np.ascontiguousarray(np.concatenate(rows, 0)[:size, :size])


def quick_models(folder: Path, minutes: float) -> dict[str, Path]:
    """Train each network briefly in same-padding mode on synthetic cells, so that argmax agreement means something."""
    data = make_dataset(folder / "data", 8, [(256, 256)], seed=1)
    found = {}
    for _, size in NETWORKS:
        result = unetkit.train(data=str(data), out=str(folder / size), overwrite=True, model_size=size, padding="same", patch_size=128,
                               time=minutes, progress=False, report=False, val_fraction=0.25)
        found[size] = Path(result.run_dir) / "best.pt"
    return found


def as_valid(checkpoint: Path, out: Path) -> Path:
    """The same weights as an unpadded (valid) network: the paper's exact overlap-tile mode."""
    ckpt = load_checkpoint(checkpoint)
    meta = {**ckpt["meta"], "model": {**ckpt["meta"]["model"], "padding": "valid"}}
    save_checkpoint(out, ckpt["model"], meta)
    return out


def flops_per_pixel(size: str, padding: str) -> float:
    """Forward FLOPs per output pixel of the network, counted on one 512-ish tile."""
    from torch.utils.flop_counter import FlopCounterMode

    from unetkit.config import MODEL_SIZES
    from unetkit.inference.tiling import largest_valid_at_most

    depth, base = MODEL_SIZES[size]["depth"], MODEL_SIZES[size]["base_channels"]
    net = UNet(base_channels=base, depth=depth, padding=padding).eval()
    tile = largest_valid_at_most(572 if padding == "valid" else 512, depth, padding)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        out = net(torch.zeros(1, 1, tile, tile))
    return counter.get_total_flops() / (out.shape[-1] * out.shape[-2])


def inference_section(folder: Path, sizes: dict[str, int], minutes: float, peaks: dict) -> tuple[list[str], dict]:
    models = quick_models(folder / "models", minutes)
    precision = resolve_precision("auto", torch.device("cpu"))
    rows, headline = [], {}
    for label, key in NETWORKS:
        size = sizes[key]
        path = folder / f"cells_{size}.tif"
        if not path.exists():
            write_tiff(path, big_image(size))
        mp = size * size / 1e6
        label = f"{label}, {size}x{size}"
        runs = {}
        valid = as_valid(models[key], folder / f"{key}-valid.pt")
        unetkit.load(valid, int8=True)  # export, calibrate and check once (cached), so the runs below time prediction only
        for engine, model, padding, backend in (("monai", models[key], "same", ""), ("unetkit", models[key], "same", ""),
                                                ("unetkit", valid, "valid", ""), ("unetkit", valid, "valid", "onnxruntime"),
                                                ("unetkit", valid, "valid", "int8")):
            name = f"{engine}-{padding}-{backend}-{key}"
            flags = {"": [], "onnxruntime": ["--backend", "onnxruntime"], "int8": ["--int8"]}[backend]
            r = run_peer(sys.executable, "infer", "--engine", engine, "--model", str(model), "--image", str(path),
                         "--out", str(folder / f"{name}.npy"), *flags)
            r["mask"] = np.load(folder / f"{name}.npy")
            r["gflops"] = flops_per_pixel(key, padding) * size * size / r["seconds"] / 1e9
            runs[(engine, padding, backend)] = r
        monai, torch_valid = runs[("monai", "same", "")], runs[("unetkit", "valid", "")]
        for (engine, padding, backend), r in runs.items():
            peak = peaks["bf16" if r["precision"] == "bf16" else "fp32"]
            of_peak = f"{100 * r['gflops'] / peak:.0f}% ({r['precision']})" if r["precision"] != "int8" else "- (int8)"
            what = ("MONAI `sliding_window_inference`, fp32, overlap 0.25, gaussian" if engine == "monai"
                    else f"`unetkit predict` ({r['precision']}, channels_last, {padding} mode)" if not backend
                    else f"`unetkit predict --backend onnxruntime` (fp32, {padding} mode)" if backend == "onnxruntime"
                    else f"`unetkit predict --int8` (ONNX Runtime, {padding} mode)")
            reference = monai if padding == "same" else torch_valid
            agree = "-" if r is torch_valid else f"{100 * (r['mask'] == reference['mask']).mean():.2f}%"
            rows.append(f"| {label} | {what} | {r['seconds']:.1f} | {mp / r['seconds']:.3f} | {r['gflops']:.0f} | "
                        f"{of_peak} | {monai['seconds'] / r['seconds']:.2f}x | "
                        f"{r['peak_rss_mb']:.0f} | {agree} |")
        fastest = min((r for (e, _, _), r in runs.items() if e == "unetkit"), key=lambda r: r["seconds"])
        headline[key] = monai["seconds"] / runs[("unetkit", "same", "")]["seconds"]
        headline[key + "_best"] = monai["seconds"] / fastest["seconds"]
        headline[key + "_peak"] = torch_valid["gflops"] / peaks["bf16" if torch_valid["precision"] == "bf16" else "fp32"]
    lines = [
        "### Inference on a large image",
        "",
        f"One {sizes['cpu']}x{sizes['cpu']} uint8 cell image (synthetic blocks) for the default network; the paper's network, 4x",
        f"slower per pixel, gets a {sizes['paper']}x{sizes['paper']} crop of it to keep the run under an hour. Each network was trained briefly ({minutes:g} min, same-padding)",
        "on synthetic cells so that its argmax is meaningful; MONAI runs the *same* `nn.Module` and weights, tile 512,",
        "4 tiles per batch for both. Valid mode runs the same weights unpadded (exact overlap-tile, no blending).",
        "GFLOP/s counts the useful work: the network's FLOPs per output pixel x the image's pixels, over the wall time",
        "(reading, tiling, writing included; overlapping tiles make the work done larger than this).",
        "Agreement: share of pixels whose class equals MONAI's (same mode) or unetkit's PyTorch valid-mode mask (valid mode).",
        "The ONNX export and the int8 calibration and accuracy check run once per checkpoint before the timed runs",
        "(they are cached in `~/.cache/unetkit`, as for users); the int8 check passed for both networks.",
        f"`precision=auto` resolved to **{precision}** here.",
        "",
        "| network | how | s | megapixels/s | useful GFLOP/s | of GEMM peak | speed vs MONAI | peak RSS MB | class agreement |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    return lines, headline


def models_section(peers_python: str | None) -> list[str]:
    rows = []
    for name in ("smp", "monai", "unetkit"):
        python = peers_python if name == "smp" else sys.executable
        if python is None:
            rows.append("| smp `Unet(resnet34, encoder_weights=None)` | not measured: run with `--setup-peers` first | | | | | | |")
            continue
        r = run_peer(python, "model", "--name", name, "--size", "512")
        label = {"smp": "smp `Unet('resnet34', encoder_weights=None)`", "monai": "MONAI `BasicUNet(spatial_dims=2)`",
                 "unetkit": "unetkit default (base 32, depth 4, valid)"}[name]
        rows.append(f"| {label} | {r['params'] / 1e6:.2f} M | {r['gflop']:.1f} | {r['input']}->{r['output']} | {r['forward_ms']:.0f} | "
                    f"{r['train_step_ms_batch2']:.0f} | {r['peak_rss_mb']:.0f} | torch {r['torch']} |")
    return [
        "### Peers' default models at 512x512",
        "",
        "1 input channel, 2 classes, random weights. Forward: batch 1 under `inference_mode`; training step: batch 2,",
        "Adam, cross-entropy; best of 3 after a warm-up; each model in its own process. Peers run as their users",
        "run them (fp32, NCHW); unetkit with its CPU defaults (channels_last). smp needs torchvision, so it runs",
        "in a separate venv with torch 2.14.1 (`--setup-peers`).",
        "",
        "| model | parameters | GFLOP / forward | input->output | forward ms | training step ms | peak RSS MB | runtime |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]


def eager_images_per_s(steps: int, patch: int = 256, batch: int = 4) -> float:
    """A plain fp32, NCHW, eager training loop over the default network on ready-made tensors."""
    torch.manual_seed(0)
    net = UNet(base_channels=32, depth=4).train()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    size = input_size_for_output(patch, 4)
    x = torch.randn(batch, 1, size, size)
    y = torch.randint(0, 2, (batch, output_size(size, 4), output_size(size, 4)))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t0)


def unetkit_images_per_s(folder: Path, steps: int, compile_model: bool, batch: int = 4) -> float:
    """``unetkit.train`` itself (sampling and augmenting in a worker), timed over an epoch after the first."""
    data = make_dataset(folder / "data", 6, [(512, 512)], seed=2)
    run = folder / ("compiled" if compile_model else "default")
    unetkit.train(data=str(data), out=str(run), overwrite=True, patch_size=256, batch_size=batch, steps_per_epoch=steps, epochs=3,
                  val_every=10, compile=compile_model, progress=False, report=False, val_fraction=0.2)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    return steps * batch / (float(rows[1]["time_s"]) - float(rows[0]["time_s"]))  # epoch 2: no validation, warm


def training_section(folder: Path, steps: int) -> tuple[list[str], dict]:
    eager = eager_images_per_s(steps)
    ours = unetkit_images_per_s(folder, steps, False)
    compiled = unetkit_images_per_s(folder, steps, True)
    eager_again = eager_images_per_s(steps)  # the machine is shared: bracket unetkit between two eager runs
    eager_mean = (eager + eager_again) / 2
    lines = [
        "### Training throughput at 256x256 patches",
        "",
        f"Default network (base 32, depth 4, valid: 348-pixel inputs, 256-pixel outputs), batch 4, Adam; {steps} steps per",
        "measurement. unetkit: `unetkit.train` itself (patches sampled and augmented in a worker process, channels_last,",
        "`precision=auto`), timed over its second epoch. Plain eager: fp32 NCHW loop on ready-made tensors, run before",
        "and after the unetkit runs (mean of both).",
        "",
        "| loop | images/s | vs plain eager |",
        "|---|---|---|",
        f"| plain fp32 eager (NCHW) | {eager_mean:.2f} ({eager:.2f}, {eager_again:.2f}) | 1.00x |",
        f"| `unetkit train` (defaults) | {ours:.2f} | {ours / eager_mean:.2f}x |",
        f"| `unetkit train --compile true` | {compiled:.2f} | {compiled / eager_mean:.2f}x |",
    ]
    return lines, {"train": ours / eager_mean, "train_compiled": compiled / eager_mean}


def tta_section(folder: Path, minutes: float) -> tuple[list[str], dict]:
    if not (ROOT / ".." / "shared" / "data" / "isbi2012").is_dir():
        return ["### Time to accuracy on ISBI 2012", "", "Not measured: ../shared/data/isbi2012 is absent."], {}
    run = folder / "isbi"
    unetkit.train(data=str(ISBI), out=str(run), overwrite=True, time=minutes, progress=False, report=False)
    rows = list(csv.DictReader((run / "metrics.csv").open()))

    def first(column: str, target: float) -> str:
        for r in rows:
            if r.get(column) not in (None, "") and float(r[column]) >= target:
                return f"{float(r['time_s']) / 60:.1f} min (epoch {r['epoch']})"
        best = max((float(r[column]) for r in rows if r.get(column)), default=float("nan"))
        return f"not within {minutes:g} min (best {best:.3f})"

    lines = [
        "### Time to accuracy on ISBI 2012",
        "",
        f"`unetkit train --data examples/isbi2012/dataset.yaml --time {minutes:g}` with every other option at its default",
        "(model_size cpu, light augmentation, CE + Dice, Adam, cosine), training on slices 0-19 and validating whole",
        "slices 20-24 every epoch. Wall-clock minutes including validation.",
        "",
        "| validation Dice | reaches 0.90 | reaches 0.93 | at the end |",
        "|---|---|---|---|",
    ]
    for label, column in (("cell (class 1)", "val_dice_cell"), ("membrane (class 0)", "val_dice_membrane"), ("mean of both", "val_dice")):
        lines.append(f"| {label} | {first(column, 0.90)} | {first(column, 0.93)} | {float(rows[-1][column]):.3f} |")
    return lines, {}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setup-peers", action="store_true", help=f"create {PEERS_VENV} with smp first")
    ap.add_argument("--size", type=int, default=4096, help="image side for the default network")
    ap.add_argument("--paper-size", type=int, default=2048, help="image side for the paper's network")
    ap.add_argument("--model-minutes", type=float, default=1.0, help="training time of the inference models")
    ap.add_argument("--train-steps", type=int, default=8)
    ap.add_argument("--tta-minutes", type=float, default=20.0)
    ap.add_argument("--skip-tta", action="store_true")
    ap.add_argument("--work", help="scratch folder (default: a temporary one)")
    args = ap.parse_args()
    if args.setup_peers and not (PEERS_VENV / "bin" / "python").exists():
        setup_peers()
    peers_python = str(PEERS_VENV / "bin" / "python") if (PEERS_VENV / "bin" / "python").exists() else None
    folder = Path(args.work or tempfile.mkdtemp(prefix="unetkit-cpu-speed-"))
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["UNETKIT_CACHE"] = str(folder / "cache")  # exports and int8 models of this run only
    command = "python benchmarks/cpu_speed.py" + "".join(
        f" --{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k in ("size", "paper_size", "tta_minutes") and v != ap.get_default(k))
    started = time.monotonic()

    peaks = {"fp32": gemm_peak(torch.float32), "bf16": gemm_peak(torch.bfloat16)}
    inference, head = inference_section(folder, {"cpu": args.size, "paper": args.paper_size}, args.model_minutes, peaks)
    models = models_section(peers_python)
    training, train_head = training_section(folder, args.train_steps)
    tta, _ = ([], {}) if args.skip_tta else tta_section(folder, args.tta_minutes)

    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    lines = [
        "## CPU speed against the hardware and against peers",
        "",
        f"Command: `{command}` ({time.strftime('%Y-%m-%d')}; {machine}; the whole run took "
        f"{(time.monotonic() - started) / 60:.0f} min). Everything below comes from this one run.",
        "",
        f"**Peak** (2048x2048 GEMM, best of 5): fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s.",
        "",
        f"**Headline**: on the same module, `unetkit predict` (same mode, defaults) is {head['cpu']:.2f}x MONAI's sliding window "
        f"on the default network and {head['paper']:.2f}x on the paper's; its fastest path is {head['cpu_best']:.2f}x and "
        f"{head['paper_best']:.2f}x. PyTorch valid mode runs at {100 * head['cpu_peak']:.0f}% / {100 * head['paper_peak']:.0f}% of the fp32 GEMM peak; "
        f"`unetkit train` runs {train_head['train']:.2f}x the images/s of a plain fp32 eager loop "
        f"({train_head['train_compiled']:.2f}x with `--compile true`).",
        "",
        *inference,
        "",
        *models,
        "",
        *training,
        "",
        *tta,
    ]
    publish("cpu-speed", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
