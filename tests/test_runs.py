"""unetkit runs: every run folder under a folder, with its settings and best scores, sorted."""

import csv
import json

import pytest
import torch

import unetkit
from tests.conftest import TINY_MODEL
from unetkit.cli import main
from unetkit.commands import RUN_COLUMNS
from unetkit.config import make_config
from unetkit.engine.run_folder import RunFolder
from unetkit.errors import UnetkitError


def make_run(folder, status="done", scores=(), **options):
    """A run folder as train leaves it: config.yaml, metrics.csv with (val_dice, val_iou) per epoch, status.json."""
    folder.mkdir(parents=True)
    run = RunFolder(folder)
    run.write_config(make_config(data="data/cells", out=str(folder), **options))
    rows = [{"epoch": e, "step": 10 * e, "time_s": 60.0 * e, "lr": 0.001, "train_loss": 0.5, "val_dice": d, "val_iou": i, "val_pixel_accuracy": ""}
            for e, (d, i) in enumerate(scores, start=1)]  # fmt: skip
    if rows:
        run.write_metrics(rows)
    if status == "done":
        run.save_best({"w": torch.zeros(1)}, {"epoch": len(rows)})
    run.write_status(status=status)


@pytest.fixture
def runs_dir(tmp_path):
    root = tmp_path / "runs"
    make_run(root / "a", scores=[(0.5, 0.4), (0.8, 0.7), (0.7, 0.6)], optimizer="sgd")
    make_run(root / "b", scores=[(0.9, 0.85)], lr=0.01, base_channels=16, loss="dice")
    make_run(root / "sweep" / "c", status="pruned", scores=[(0.6, 0.5), ("", "")], augment="paper", model_size="paper")
    make_run(root / "d", status="running")  # no epoch finished yet: no scores
    make_run(root / "b" / "mlflow" / "artifacts" / "x", scores=[(0.99, 0.99)])  # inside a run: not a run
    (root / "notes").mkdir()
    (root / "notes" / "config.yaml").write_text("lr: 0.1\n")  # a config alone is no run
    return root


def test_rows_hold_settings_and_best_scores(runs_dir):
    rows = {r["run"]: r for r in unetkit.runs(runs_dir)}
    assert set(rows) == {"a", "b", "sweep/c", "d"}
    a = rows["a"]
    assert (a["status"], a["data"], a["optimizer"], a["lr"], a["epochs"], a["minutes"]) == ("done", "data/cells", "sgd", 0.01, 3, 3.0)
    assert (a["dice"], a["iou"]) == (0.8, 0.7)  # the IoU of the best-Dice epoch, as best.pt
    assert (a["model_size"], a["base_channels"], a["depth"], a["patch_size"], a["loss"], a["augment"]) == ("auto", 32, 4, 128, "ce+dice", "light")
    assert (rows["b"]["lr"], rows["b"]["base_channels"], rows["b"]["loss"]) == (0.01, 16, "dice")
    c = rows["sweep/c"]
    assert (c["status"], c["dice"], c["epochs"], c["model_size"], c["base_channels"], c["augment"]) == ("pruned", 0.6, 2, "paper", 64, "paper")
    assert (rows["d"]["status"], rows["d"]["dice"], rows["d"]["epochs"], rows["d"]["minutes"]) == ("running", None, 0, None)


@pytest.mark.parametrize(
    "sort, reverse, order",
    [
        ("dice", False, ["b", "a", "sweep/c", "d"]),  # best first, no score last
        ("dice", True, ["sweep/c", "a", "b", "d"]),  # still last
        ("run", False, ["a", "b", "d", "sweep/c"]),
        ("lr", False, ["a", "b", "d", "sweep/c"]),  # 0.01, 0.01, 0.001, 0.001: ties keep folder order
        ("base_channels", False, ["sweep/c", "a", "d", "b"]),
        ("status", False, ["a", "b", "sweep/c", "d"]),
        ("minutes", False, ["a", "sweep/c", "b", "d"]),
    ],
)
def test_sorting(runs_dir, sort, reverse, order):
    assert [r["run"] for r in unetkit.runs(runs_dir, sort=sort, reverse=reverse)] == order


def test_unknown_sort_key_and_missing_folder(runs_dir, tmp_path):
    with pytest.raises(UnetkitError, match=r"cannot sort by 'dise'; did you mean 'dice'\?"):
        unetkit.runs(runs_dir, sort="dise")
    with pytest.raises(UnetkitError, match="nope: no such folder"):
        unetkit.runs(tmp_path / "nope")


def test_cli_table_json_and_no_runs(runs_dir, tmp_path, capsys):
    assert main(["runs", str(runs_dir), "--sort", "lr", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["run"] for r in rows] == ["a", "b", "d", "sweep/c"] and rows[0]["dice"] == 0.8
    assert main(["runs", str(runs_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["run", "status", "data", "size", "base", "depth", "patch", "loss", "optim", "lr", "augment", "epochs", "min", "dice", "iou"]
    assert lines[1].split() == ["b", "done", "data/cells", "auto", "16", "4", "128", "dice", "adam", "0.01", "light", "1", "1.0", "0.9000", "0.8500"]
    assert lines[4].split()[:2] == ["d", "running"] and lines[4].split()[-3:] == ["-", "-", "-"]
    (tmp_path / "empty").mkdir()
    assert main(["runs", str(tmp_path / "empty")]) == 0
    assert capsys.readouterr().out.startswith(f"no runs under {tmp_path / 'empty'} (a run is a folder with config.yaml and metrics.csv")
    assert main(["runs", str(tmp_path / "nope")]) == 2


def test_a_real_run_is_listed(tiny_data, tmp_path):
    out = tmp_path / "runs" / "exp"
    unetkit.train(data=str(tiny_data), out=str(out), epochs=2, steps_per_epoch=1, **TINY_MODEL)
    metrics = list(csv.DictReader((out / "metrics.csv").open()))
    (row,) = unetkit.runs(tmp_path / "runs")
    best = max(metrics, key=lambda r: float(r["val_dice"]))
    settings = (row["run"], row["status"], row["data"], row["base_channels"], row["depth"], row["patch_size"], row["epochs"])
    assert settings == ("exp", "done", str(tiny_data), 4, 3, 24, 2)
    assert (row["dice"], row["iou"]) == (float(best["val_dice"]), float(best["val_iou"]))
    assert row["minutes"] == round(float(metrics[-1]["time_s"]) / 60, 2)


BROKEN = {
    "status.json not JSON": (lambda run: run.status.write_text("{not json"), "unknown", "status.json unreadable"),
    "status.json a list": (lambda run: run.status.write_text("[1, 2]"), "unknown", "status.json is not a mapping"),
    "config.yaml not YAML": (lambda run: run.config.write_text("lr: [1, 2\n  : :"), "done", "config.yaml unreadable"),
    "config.yaml not UTF-8": (lambda run: run.config.write_bytes(b"lr: \xff\xfe\n"), "done", "config.yaml unreadable"),
    "config.yaml missing": (lambda run: run.config.unlink(), "done", "config.yaml missing"),
    "metrics.csv binary": (lambda run: run.metrics.write_bytes(b"\x00\xff\x89PNG\x00"), "done", "metrics.csv"),
    "metrics.csv text in number columns": (lambda run: run.metrics.write_text("epoch,step,time_s,val_dice,val_iou\nten,x,y,high,z\n"),
                                           "done", None),
    "config values of the wrong type": (lambda run: run.config.write_text("lr: fast\nbase_channels: [1]\ndata: {a: 1}\n"), "done", None),
    "best.pt cut short": (lambda run: run.best.write_bytes(run.best.read_bytes()[:100]), "done", "best.pt is not a checkpoint"),
    "best.pt missing": (lambda run: run.best.unlink(), "done", "best.pt missing"),
    "last.pt not a checkpoint": (lambda run: run.last.write_text("hello"), "done", "last.pt is not a checkpoint"),
}


@pytest.mark.parametrize("kind", BROKEN)
def test_a_broken_run_is_listed_with_its_problem_and_the_others_still_are(runs_dir, capsys, kind):
    damage, status, problem = BROKEN[kind]
    run = RunFolder(runs_dir / "a")
    run.save_last({"w": torch.zeros(1)}, {"epoch": 3}, progress="{}")
    damage(run)
    rows = {r["run"]: r for r in unetkit.runs(runs_dir)}
    assert set(rows) == {"a", "b", "sweep/c", "d"}
    assert rows["a"]["status"] == status
    if problem is None:  # readable files with odd values: the values are dropped, not formatted as numbers
        assert rows["a"]["problem"] is None
    else:
        assert problem in rows["a"]["problem"]
    assert rows["b"]["problem"] is None and rows["b"]["dice"] == 0.9
    for sort in ("dice", "lr", "base_channels", "epochs", "minutes", "data", "status"):
        assert len(unetkit.runs(runs_dir, sort=sort)) == 4
    assert main(["runs", str(runs_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5
    if problem is not None:
        assert lines[0].split()[-1] == "problem" and problem in next(line for line in lines if line.startswith("a "))


def test_odd_values_are_dropped_not_formatted(runs_dir):
    RunFolder(runs_dir / "b").config.write_text("lr: fast\nbase_channels: [1]\ndata: {a: 1}\noptimizer: 3\n")
    row = next(r for r in unetkit.runs(runs_dir) if r["run"] == "b")
    assert (row["lr"], row["base_channels"], row["data"], row["optimizer"]) == (None, None, "{'a': 1}", 3)
    for sort in RUN_COLUMNS:  # numbers and text sort side by side without a TypeError
        assert [r["run"] for r in unetkit.runs(runs_dir, sort=sort)].count("b") == 1
