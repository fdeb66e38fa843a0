"""The run folder's files: written atomically, read back as written."""

import pytest
import torch

from unetkit.config import make_config
from unetkit.engine.run_folder import CSV_FIELDS, RunFolder
from unetkit.errors import UnetkitError


def test_metrics_round_trip_and_best_scores(tmp_path):
    run = RunFolder(tmp_path / "run")
    rows = [{"epoch": 1, "step": 10, "time_s": 6.5, "lr": 0.001, "train_loss": 0.9, "val_dice": 0.5, "val_iou": 0.4, "val_pixel_accuracy": 0.8,
             "val_dice_cell": 0.3},
            {"epoch": 2, "step": 20, "time_s": 13.0, "lr": 0.001, "train_loss": 0.7, "val_dice": "", "val_iou": "", "val_pixel_accuracy": ""},
            {"epoch": 3, "step": 30, "time_s": 19.5, "lr": 0.0005, "train_loss": 0.6, "val_dice": 0.5, "val_iou": 0.45, "val_pixel_accuracy": 0.9,
             "val_dice_cell": 0.2}]  # fmt: skip
    run.write_metrics(rows)
    assert run.metrics.read_text().splitlines()[0].split(",") == [*CSV_FIELDS, "val_dice_cell"]
    back = run.read_metrics()
    assert back[0] == rows[0] and back[1]["val_dice"] is None and back[1]["val_dice_cell"] is None
    assert run.best_scores() == (0.5, 0.4)  # the first epoch of the best Dice, as best.pt
    assert [p.name for p in run.path.iterdir()] == ["metrics.csv"]  # no temporary file left behind


def test_status_config_and_missing_files(tmp_path):
    run = RunFolder(tmp_path)
    assert (run.read_status(), run.read_config(), run.read_metrics(), run.best_scores(), run.is_run()) == ({}, {}, [], (None, None), False)
    run.write_status(status="nan", epoch=2, step=7, lr_setting=0.1)
    assert run.read_status() == {"status": "nan", "epoch": 2, "step": 7, "lr_setting": 0.1}
    run.write_config(make_config(data="d", lr=0.01), {"processes": 2})
    assert run.read_config()["lr"] == 0.01 and "# processes: 2" in run.config.read_text() and run.is_run()
    run.status.write_text("{not json")
    assert run.read_status() == {}


def test_last_checkpoint_progress_and_stale_temporary_files(tmp_path):
    run = RunFolder(tmp_path)
    (tmp_path / ".last.tmp-1a2b.pt").write_bytes(b"half")  # left by a process killed mid-write
    run.prepare()
    assert list(tmp_path.iterdir()) == []
    run.save_last({"w": torch.zeros(2)}, {"epoch": 1}, progress='{"epoch": 1, "best": 0.5}')
    assert run.read_progress() == {"epoch": 1, "best": 0.5} and run.load_last()["meta"] == {"epoch": 1}
    with pytest.raises(UnetkitError, match="checkpoint not found"):
        RunFolder(tmp_path / "none").read_progress()
