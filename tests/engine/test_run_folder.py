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


def test_a_new_run_clears_what_an_earlier_one_left(tmp_path):
    run = RunFolder(tmp_path)
    for path in (run.best, run.last, run.metrics, run.curves, run.config, run.status):
        path.write_text("earlier")
    (tmp_path / "notes.txt").write_text("mine")
    run.clear_run()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "notes.txt", "status.json"]  # rewritten at once, or the user's


def test_problems_name_what_is_damaged_or_missing(tmp_path):
    run = RunFolder(tmp_path)
    run.write_config(make_config(data="d"))
    run.write_status(status="done")
    run.save_best({"w": torch.zeros(1)}, {})
    run.write_metrics([{"epoch": 1, "step": 1}])
    assert run.problems() == [] and run.is_run()
    run.status.write_text("{not json")
    run.metrics.write_bytes(b"\x00\x00")
    run.best.write_bytes(run.best.read_bytes()[:50])
    run.last.write_text("not a zip")
    assert run.problems() == ["status.json unreadable (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))",
                              "metrics.csv has no epoch,step header", "best.pt is not a checkpoint (cut short or replaced)",
                              "last.pt is not a checkpoint (cut short or replaced)"]
    assert run.read_metrics() == [] and run.read_status() == {}  # readers stay tolerant
    run.config.unlink()
    assert run.is_run() and run.problems()[0] == "config.yaml missing"  # still a run, reported as damaged
