"""One measurement in a fresh process, printed as one JSON line; run by benchmarks/cpu_speed.py.

Each measurement runs alone so that its peak RSS is its own. smp needs torchvision, which does not import
beside torch 2.13, so ``model --name smp`` runs in the peers' venv (torch 2.14.1 + torchvision 0.29.1),
where unetkit is not installed: nothing here imports unetkit at module level.

Usage:
    python benchmarks/_peer.py model --name {smp,monai,unetkit} [--size 512]
    python benchmarks/_peer.py infer --engine {unetkit,monai} --model CKPT --image TIF --out NPY [--tile 512]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; ru_maxrss would include the parent's at fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: KiB on most systems


def best_ms(fn, repeats: int) -> float:
    fn()  # warm-up: kernels are picked and cached
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * min(times)


def build(name: str) -> tuple[torch.nn.Module, bool]:
    """A peer's default 2D segmentation model (1 input channel, 2 classes); True if it runs NHWC."""
    if name == "smp":
        import segmentation_models_pytorch as smp

        return smp.Unet("resnet34", encoder_weights=None, in_channels=1, classes=2), False
    if name == "monai":
        from monai.networks.nets import BasicUNet

        return BasicUNet(spatial_dims=2, in_channels=1, out_channels=2), False
    from unetkit.models.unet import UNet

    return UNet(in_channels=1, num_classes=2, base_channels=32, depth=4), True  # unetkit's default: model_size cpu


def model_bench(name: str, size: int, repeats: int) -> dict:
    """Parameters, GFLOP, forward and training-step time of a peer's default model, as its users run it."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    net, channels_last = build(name)
    params = sum(p.numel() for p in net.parameters())
    if name == "unetkit":  # valid mode takes sizes on its grid: the largest one <= size
        from unetkit.inference.tiling import largest_valid_at_most

        size = largest_valid_at_most(size, net.config.depth, net.config.padding)
    x = torch.randn(1, 1, size, size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        out = net.eval()(x)
    out_size = out.shape[-1]
    if channels_last:  # unetkit's default path on the CPU (predict and train)
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        forward = best_ms(lambda: net(x), repeats)
    net.train()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    xb = torch.randn(2, 1, size, size)
    if channels_last:
        xb = xb.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (2, out_size, out_size))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(xb), y).backward()
        opt.step()

    train = best_ms(step, repeats)
    return {"name": name, "params": params, "gflop": counter.get_total_flops() / 1e9, "input": size, "output": out_size, "forward_ms": forward,
            "train_step_ms_batch2": train, "peak_rss_mb": peak_rss_mb(), "torch": torch.__version__}


def infer(engine: str, model: str, image_path: str, out: str, tile: int, backend: str = "torch", int8: bool = False) -> dict:
    """Segment one image: with unetkit's default predict path, or the same module through MONAI's sliding window."""
    t0 = time.perf_counter()
    if engine == "unetkit":
        import unetkit

        from unetkit.data.io import read_mask_raw
        from unetkit.runtime import resolve_precision

        folder = Path(out).with_suffix("")  # exactly `unetkit predict --model M IMAGE --out FOLDER --tile T`, defaults otherwise
        unetkit.predict(model, image_path, folder, tile=tile, progress=False, backend=backend, int8=int8)
        mask = read_mask_raw(folder / (Path(image_path).stem + ".png"))
        extra = {"precision": "int8" if int8 else "fp32" if backend == "onnxruntime" else resolve_precision("auto", torch.device("cpu"))}
    else:
        from monai.inferers import sliding_window_inference

        from unetkit.engine.checkpoint import load_checkpoint
        from unetkit.models.config import ModelConfig
        from unetkit.models.unet import UNet

        import tifffile

        image = tifffile.imread(image_path)
        ckpt = load_checkpoint(model)
        net = UNet(ModelConfig.from_dict(ckpt["meta"]["model"]))
        net.load_state_dict(ckpt["model"])
        net.eval()
        norm = ckpt["meta"]["normalization"]
        x = torch.from_numpy((image.astype(np.float32) - norm["mean"][0]) / norm["std"][0])[None, None]
        with torch.no_grad():  # as MONAI's tutorials run it: fp32, NCHW
            logits = sliding_window_inference(x, (tile, tile), 4, net, overlap=0.25, mode="gaussian")
        mask = logits[0].argmax(0).numpy().astype(np.uint8)
        extra = {"precision": "fp32"}
    seconds = time.perf_counter() - t0
    np.save(out, mask)
    return {"engine": engine, "seconds": seconds, "peak_rss_mb": peak_rss_mb(), **extra}


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    m = sub.add_parser("model")
    m.add_argument("--name", required=True, choices=("smp", "monai", "unetkit"))
    m.add_argument("--size", type=int, default=512)
    m.add_argument("--repeats", type=int, default=3)
    i = sub.add_parser("infer")
    i.add_argument("--engine", required=True, choices=("unetkit", "monai"))
    i.add_argument("--model", required=True)
    i.add_argument("--image", required=True)
    i.add_argument("--out", required=True)
    i.add_argument("--tile", type=int, default=512)
    i.add_argument("--backend", default="torch", choices=("torch", "onnxruntime"))
    i.add_argument("--int8", action="store_true")
    args = ap.parse_args()
    if args.what == "model":
        result = model_bench(args.name, args.size, args.repeats)
    else:
        result = infer(args.engine, args.model, args.image, args.out, args.tile, args.backend, args.int8)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
