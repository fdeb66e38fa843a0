"""Cross-validation folds: the split by hand, the refusals, ``train --folds 2`` end to end into an ensemble that
predict and evaluate take as one model, and ``--resume`` continuing the unfinished fold."""

import json
import shutil

import numpy as np
import pytest
import yaml
from PIL import Image

import unetkit
from unetkit.cli import main
from unetkit.config import make_config
from unetkit.data.dataset import Pair, fold_pairs
from unetkit.commands import TrainRun
from unetkit.engine.folds import FoldsResult, folds_plan, train_folds
from unetkit.engine.run_folder import RunFolder
from unetkit.engine.training_data import load_split
from unetkit.errors import TrainingInterrupted, UnetkitError
from unetkit.inference.options import InferenceOptions
from unetkit.loading import load_segmenter

from tests.conftest import TINY_MODEL
from tests.test_cli import flags

ONE_EPOCH = ["--epochs", "1", "--steps-per-epoch", "2", "--seed", "1", *flags(TINY_MODEL)]


def pairs(keys):
    return [Pair(k, None, None) for k in keys]


def test_folds_partition_the_pairs_reproducibly():
    keys = [f"img{i}" for i in range(11)]
    vals = [fold_pairs(pairs(keys), 3, fold, seed=7)[1] for fold in range(3)]
    assert sorted(len(v) for v in vals) == [3, 4, 4]
    assert sorted(p.key for v in vals for p in v) == sorted(keys)  # each pair validates in exactly one fold
    for fold, val in enumerate(vals):
        train, again = fold_pairs(pairs(keys[::-1]), 3, fold, seed=7)  # the draw ignores the order of the pairs
        assert {p.key for p in again} == {p.key for p in val} and {p.key for p in train} == set(keys) - {p.key for p in val}
        assert [p.key for p in train] == [k for k in keys[::-1] if k not in {p.key for p in val}]  # input order kept
    assert [p.key for p in fold_pairs(pairs(keys), 3, 0, seed=8)[1]] != [p.key for p in vals[0]]


def test_fold_split_refusals():
    with pytest.raises(UnetkitError, match=r"2 labelled pair\(s\) cannot make 3 folds .*; pass --folds 2 or fewer"):
        fold_pairs(pairs(["a", "b"]), 3, 0, seed=0)
    with pytest.raises(UnetkitError, match=r"fold 3 is not one of the 3 folds 0\.\.2"):
        fold_pairs(pairs("abcd"), 3, 3, seed=0)


def test_load_split_of_a_fold_and_its_refusals(tiny_data):
    cfg = make_config(data=str(tiny_data), folds=3, fold=1, seed=2)
    _, train, val = load_split(cfg)
    assert len(val) == 2 and len(train) == 4 and not {p.key for p in train} & {p.key for p in val}
    with pytest.raises(UnetkitError, match="--folds 3 validates each fold on its own share of the training pairs; drop --val"):
        load_split(make_config(data=str(tiny_data), folds=3, fold=0, val=str(tiny_data)))
    with pytest.raises(UnetkitError, match="--fold 1 needs --folds K"):
        load_split(make_config(data=str(tiny_data), fold=1))
    with pytest.raises(UnetkitError, match="to train a single fold here, pass --fold I"):
        load_split(make_config(data=str(tiny_data), folds=3))
    with pytest.raises(UnetkitError, match="folds must be >= 2"):
        make_config(data=str(tiny_data), folds=1)


def test_folds_refused_before_anything_is_written(tiny_data, tmp_path, capsys):
    out = tmp_path / "cv"
    assert main(["train", "--data", str(tiny_data), "--out", str(out), "--folds", "2", "--val", str(tiny_data), *ONE_EPOCH]) == 2
    assert "--folds 2 validates each fold on its own share of the training pairs; drop --val" in capsys.readouterr().err
    assert main(["train", "--data", str(tiny_data), "--out", str(out), "--folds", "7", *ONE_EPOCH]) == 2
    assert "6 labelled pair(s) cannot make 7 folds" in capsys.readouterr().err
    assert not out.exists()


@pytest.fixture(scope="module")
def cv(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cv") / "run"
    assert main(["train", "--data", str(tiny_data), "--out", str(out), "--folds", "2", *ONE_EPOCH]) == 0
    return out


def test_train_folds_writes_the_folds_and_their_ensemble(cv, tiny_data):
    assert {p.name for p in cv.iterdir()} == {"config.yaml", "ensemble.yaml", "fold0", "fold1"}
    manifest = yaml.safe_load((cv / "ensemble.yaml").read_text())
    assert manifest == {"kind": "unetkit-ensemble", "version": 1, "members": ["fold0/best.pt", "fold1/best.pt"],
                        "classes": ["background", "foreground"]}  # fmt: skip
    assert yaml.safe_load((cv / "config.yaml").read_text())["folds"] == 2
    vals = []
    for fold in (0, 1):
        folder = RunFolder(cv / f"fold{fold}")
        assert folder.read_status()["status"] == "done" and folder.best.is_file()
        cfg = folder.read_config()
        assert (cfg["folds"], cfg["fold"], cfg["out"], cfg["epochs"]) == (2, fold, str(folder.path), 1)
        root = yaml.safe_load((cv / "config.yaml").read_text())
        assert {k: cfg[k] for k in root if k not in ("out", "fold")} == {k: v for k, v in root.items() if k not in ("out", "fold")}
        vals.append({p.key for p in load_split(make_config(**cfg))[2]})
    assert len(vals[0]) == len(vals[1]) == 3 and not vals[0] & vals[1]  # each of the 6 pairs validates once


def test_predict_and_evaluate_take_the_run_folder(cv, tiny_data, tmp_path):
    out = tmp_path / "preds"
    assert main(["predict", "--model", str(cv), str(tiny_data / "images"), "--out", str(out), "--no-progress"]) == 0
    masks = sorted(out.glob("*.png"))
    assert len(masks) == 6 and set(np.unique(np.asarray(Image.open(masks[0])))) <= {0, 1}
    seg = load_segmenter(cv / "ensemble.yaml", InferenceOptions(device="cpu", precision="fp32"))
    assert seg.meta["ensemble"] == [str(cv / "fold0" / "best.pt"), str(cv / "fold1" / "best.pt")]
    assert seg.meta["normalization"] == {"mean": [0.0], "std": [1.0]}  # each fold standardises with its own training statistics
    image = np.asarray(Image.open(tiny_data / "images" / "cells_000.png"))[:, :, None]
    np.testing.assert_array_equal(np.asarray(Image.open(out / "cells_000.png")), seg.predict_mask(image))
    scores = tmp_path / "s.json"
    assert main(["evaluate", "--model", str(cv), "--data", str(tiny_data), "--json-path", str(scores), "--no-progress"]) == 0
    assert 0 <= json.loads(scores.read_text())["dice"]["mean"] <= 1


def test_resume_keeps_done_folds_and_continues_the_interrupted_one(cv, tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(cv, run)  # a copy resumes in its own folder
    (run / "ensemble.yaml").unlink()
    RunFolder(run / "fold1").write_status(status="interrupted", epoch=1, step=2)  # killed before it said done
    done = (run / "fold0" / "best.pt").stat().st_mtime_ns
    assert main(["train", "--data", str(tiny_data), "--out", str(run), "--folds", "2", *ONE_EPOCH]) == 2
    assert f"--out {run} already holds a run (config.yaml, fold0, fold1); continue it with --resume {run}" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--seed", "5"]) == 2
    assert "--seed 5 would change the cross-validation (seed: 1)" in capsys.readouterr().err
    result = unetkit.train(resume=str(run), epochs=2)
    assert isinstance(result, FoldsResult) and [r.epochs for r in result.folds] == [1, 2]
    assert (run / "fold0" / "best.pt").stat().st_mtime_ns == done  # the done fold was kept as it was
    assert [row["epoch"] for row in RunFolder(run / "fold1").read_metrics()] == [1, 2]  # continued, not started over
    assert yaml.safe_load((run / "ensemble.yaml").read_text())["members"] == ["fold0/best.pt", "fold1/best.pt"]
    assert "per fold" in result.summary() and f"predict with --model {run}" in result.summary()


def test_an_interrupted_fold_says_how_to_resume_the_whole_run(tiny_data, tmp_path):
    def interrupted(start, options, callbacks):
        assert options["fold"] == 0 and options["time"] == 1.5  # a K-th of the budget each
        raise TrainingInterrupted(f"stopped at epoch 1, step 3; continue with: unetkit train --resume {options['out']}")

    plan = folds_plan(TrainRun(), {"data": str(tiny_data), "out": str(tmp_path / "cv"), "folds": 2, "time": 3.0})
    with pytest.raises(TrainingInterrupted, match=rf"fold 0: stopped at epoch 1, step 3; continue with: unetkit train --resume {tmp_path / 'cv'}$"):
        train_folds(plan, (), interrupted)
    assert folds_plan(TrainRun(resume=str(tmp_path / "cv")), {}).resumed  # the root resumes as a --folds run
    assert folds_plan(TrainRun(), {"data": str(tiny_data), "folds": 2, "fold": 1}) is None  # one fold: a single run


def test_model_size_auto_plans_once_for_every_fold(tiny_data, tmp_path):
    seen = []

    def record(start, options, callbacks):
        seen.append(options)
        raise TrainingInterrupted("recorded")

    options = {"data": str(tiny_data), "out": str(tmp_path / "cv"), "folds": 3, "epochs": 1, "progress": False}
    with pytest.raises(TrainingInterrupted):
        train_folds(folds_plan(TrainRun(), options), (), record)
    root = yaml.safe_load((tmp_path / "cv" / "config.yaml").read_text())
    assert (tmp_path / "cv" / "plan.yaml").is_file() and root["model_size"] == "auto"
    planned = {k: root[k] for k in ("base_channels", "depth", "patch_size", "batch_size", "padding")}
    assert {k: seen[0][k] for k in planned} == planned and seen[0]["fold"] == 0  # the fold trains the planned network, as given
