"""``unetkit demo``: generate a small cell-like data set, train, predict on held-out images, evaluate, report.

Nothing is downloaded: the data is drawn here, so the demo runs anywhere in a few minutes on a CPU.
"""

from __future__ import annotations

import time
from pathlib import Path

from unetkit.api import predict, train
from unetkit.commands import DemoOptions
from unetkit.data.synthetic import make_dataset
from unetkit.evaluation import evaluate


def run_demo(**options) -> dict:
    """Generate data, train a small valid-mode U-Net, predict held-out images of other sizes, evaluate.

    ``options`` are those of :class:`~unetkit.commands.DemoOptions` (``out``, ``epochs``, ``seed``, ``progress``).

    Writes ``out/data`` (training pairs), ``out/heldout`` (never seen in training), ``out/run``
    (checkpoints, config, metrics.csv, curves.png), ``out/predictions`` and ``out/report``
    (``index.html``, ``metrics.json``).

    Returns:
        ``{"dice": foreground Dice on the held-out images, "seconds": wall time, "report": path}``
    """
    o = DemoOptions.build("demo", **options)
    started, out, seed, progress = time.monotonic(), Path(o.out), o.seed, o.progress
    make_dataset(out / "data", 24, [(192, 192), (160, 224)], seed)
    # Held-out images have sizes the network never saw: tiling handles any size.
    make_dataset(out / "heldout", 6, [(300, 220), (129, 381), (256, 256)], seed + 1000)
    result = train(
        data=str(out / "data"), out=str(out / "run"), overwrite=True, epochs=o.epochs, steps_per_epoch=25, batch_size=4,
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
