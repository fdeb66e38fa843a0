"""``unetkit demo``: generate a small cell-like data set, train, predict on held-out images, evaluate, report.

Nothing is downloaded: the data is drawn here, so the demo runs anywhere in a few minutes on a CPU.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from unetkit.api import predict, train
from unetkit.commands import DemoOptions
from unetkit.data.synthetic import make_dataset
from unetkit.errors import UnetkitError
from unetkit.evaluation import evaluate
from unetkit.files import atomic_write

MARK = ".unetkit-demo"  # written first into the demo's folder: what holds it, a later demo may replace
PRODUCTS = ("data", "heldout", "run", "predictions", "report", "metrics.json")


def claim_folder(out: Path) -> None:
    """Make ``out`` the demo's: refuse a folder that holds anything a demo did not make, else clear an earlier demo's products."""
    if out.exists() and not out.is_dir():
        raise UnetkitError(f"--out: {out} is a file; choose a folder for the demo")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if held and MARK not in held:
        raise UnetkitError(f"--out: {out} already holds {', '.join(held[:3])}{' ...' if len(held) > 3 else ''}, which no demo made; "
                           f"choose a new or empty folder for the demo")
    for name in PRODUCTS:
        target = out / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
    with atomic_write(out / MARK) as tmp:
        tmp.write_text("made by unetkit demo; a later demo replaces this folder's contents\n")


def run_demo(**options) -> dict:
    """Generate data, train a small valid-mode U-Net, predict held-out images of other sizes, evaluate.

    ``options`` are those of :class:`~unetkit.commands.DemoOptions` (``out``, ``epochs``, ``seed``, ``progress``).

    Refuses an ``out`` that holds files an earlier demo did not make; replaces an earlier demo's.
    Writes ``out/data`` (training pairs), ``out/heldout`` (never seen in training), ``out/run``
    (checkpoints, config, metrics.csv, curves.png), ``out/predictions`` and ``out/report``
    (``index.html``, ``metrics.json``).

    Returns:
        ``{"dice": foreground Dice on the held-out images, "seconds": wall time, "report": path}``
    """
    o = DemoOptions.build("demo", **options)
    started, out, seed, progress = time.monotonic(), Path(o.out), o.seed, o.progress
    claim_folder(out)
    make_dataset(out / "data", 24, [(192, 192), (160, 224)], seed)
    # Held-out images have sizes the network never saw: tiling handles any size.
    make_dataset(out / "heldout", 6, [(300, 220), (129, 381), (256, 256)], seed + 1000)
    # A network sized by hand for a 90-second demo (the cpu preset's shape, narrower), not planned: the same every time.
    result = train(
        data=str(out / "data"), out=str(out / "run"), overwrite=True, model_size="cpu", epochs=o.epochs, steps_per_epoch=25, batch_size=4,
        patch_size=96, base_channels=16, depth=4, lr=2e-3, seed=seed, progress=progress, tile=256,
    )
    predict(out / "run" / "best.pt", out / "heldout" / "images", out / "predictions", overlay=True, progress=progress)
    scores = evaluate(
        pred=out / "predictions", truth=out / "heldout", json_path=out / "metrics.json", report_dir=out / "report",
        run=out / "run", progress=progress,
    )
    return {
        "dice": scores["dice"]["foreground"],
        "mean_dice": scores["dice"]["mean"],
        "best_val_dice": result.best_dice,
        "seconds": time.monotonic() - started,
        "report": out / "report" / "index.html",
    }
