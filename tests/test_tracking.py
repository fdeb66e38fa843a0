"""Experiment tracking: what --log tensorboard / mlflow write, read back with the libraries' own readers."""

import csv
import sys

import numpy as np
import pytest
from PIL import Image

import unetkit
from tests.conftest import TINY_MODEL
from unetkit.cli import main
from unetkit.config import make_config
from unetkit.engine.training_data import load_split
from unetkit.errors import UnetkitError
from unetkit.tracking import MLflowLogger, TensorBoardLogger, centre_crop, sample_panel, scalar_tags


def flags(options: dict) -> list[str]:
    return [x for k, v in options.items() for x in (f"--{k.replace('_', '-')}", str(v).lower() if isinstance(v, bool) else str(v))]


@pytest.fixture(scope="module")
def logged_run(tiny_data, tmp_path_factory):
    """A 2-epoch run with both loggers, through the CLI."""
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    out = tmp_path_factory.mktemp("tracked") / "run"
    assert main(["train", "--data", str(tiny_data), "--out", str(out), "--epochs", "2", "--steps-per-epoch", "2",
                 "--log", "tensorboard,mlflow", *flags(TINY_MODEL)]) == 0  # fmt: skip
    return out, list(csv.DictReader((out / "metrics.csv").open()))


def mlflow_runs(uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("unetkit")
    return client, client.search_runs([experiment.experiment_id])


def test_tensorboard_event_files_hold_scalars_and_samples(logged_run, tiny_data):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, rows = logged_run
    _, _, val_pairs = load_split(make_config(data=str(tiny_data)))
    sizes = [Image.open(p.image).size for p in val_pairs]  # (width, height)
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "train/lr", "train/time_s", "val/dice", "val/iou", "val/pixel_accuracy", "val/dice_foreground"} <= set(tags["scalars"])
    for tag, column in (("train/loss", "train_loss"), ("val/dice", "val_dice"), ("val/iou", "val_iou")):
        assert [e.step for e in events.Scalars(tag)] == [1, 2]
        assert [e.value for e in events.Scalars(tag)] == pytest.approx([float(r[column]) for r in rows], rel=1e-6)
    assert tags["images"] == [f"samples/{i}" for i in range(len(sizes))]  # input | truth | prediction, each epoch
    for tag, (width, height) in zip(tags["images"], sizes):
        images = events.Images(tag)
        assert [im.step for im in images] == [1, 2]
        assert (images[0].width, images[0].height) == (3 * width + 4, height)


def test_mlflow_run_is_listed_with_params_metrics_and_artifacts(logged_run):
    out, rows = logged_run
    client, runs = mlflow_runs(f"sqlite:///{out / 'mlflow' / 'mlflow.db'}")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == str(out)
    params = run.data.params
    assert params["base_channels"] == "4" and params["loss"] == "ce+dice" and params["log"] == "['tensorboard', 'mlflow']"
    history = client.get_metric_history(run.info.run_id, "val_dice")
    assert [m.step for m in history] == [1, 2]
    assert [m.value for m in history] == pytest.approx([float(r["val_dice"]) for r in rows])
    assert run.data.metrics["best_val_dice"] == pytest.approx(max(float(r["val_dice"]) for r in rows))
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"metrics.csv", "curves.png", "config.yaml"}
    assert run.data.tags["unetkit.best_checkpoint"] == str((out / "best.pt").resolve())


def test_mlflow_run_of_a_failed_training_is_ended_failed(tiny_data, tmp_path):
    pytest.importorskip("mlflow")

    class Fail:
        def on_epoch_end(self, row, view):
            raise RuntimeError("boom")

    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="boom"):
        unetkit.train(data=str(tiny_data), out=str(out), epochs=3, steps_per_epoch=1, log=["mlflow"], callbacks=[Fail()], **TINY_MODEL)
    client, runs = mlflow_runs(f"sqlite:///{out / 'mlflow' / 'mlflow.db'}")
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "metrics.csv" in {a.path for a in client.list_artifacts(runs[0].info.run_id)}  # what the run left is kept


def test_log_option_from_yaml_and_flags(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("log: [tensorboard]\n")
    assert make_config(cfg).log == ["tensorboard"]
    assert make_config(log="tensorboard, mlflow").log == ["tensorboard", "mlflow"]
    assert make_config().log == []  # off by default
    with pytest.raises(UnetkitError, match="log='wandb' is not one of tensorboard, mlflow"):
        make_config(log=["wandb"])
    assert main(["train", "--data", str(tmp_path), "--log", "tensorboard,wandb"]) == 2
    assert capsys.readouterr().err.strip() == "unetkit: error: log='wandb' is not one of tensorboard, mlflow"


@pytest.mark.parametrize("module, logger, hint", [("tensorboard", TensorBoardLogger, "tensorboard"), ("mlflow", MLflowLogger, "mlflow")])
def test_missing_library_gives_the_install_hint(monkeypatch, module, logger, hint):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(UnetkitError, match=rf"--log {module} needs .*: pip install 'unetkit\[{hint}\]'"):
        logger()


def test_scalar_tags_of_a_metrics_row():
    row = {"epoch": 3, "step": 30, "time_s": 12.5, "lr": 0.001, "train_loss": 0.5, "val_dice": 0.75, "val_iou": "", "val_dice_cell": 0.8}
    assert scalar_tags(row) == {"train/time_s": 12.5, "train/lr": 0.001, "train/loss": 0.5, "val/dice": 0.75, "val/dice_cell": 0.8}


def test_sample_panel_is_input_truth_prediction():
    image = np.arange(12, dtype=np.uint8).reshape(3, 4, 1)
    truth = np.array([[0, 1, 1, 0]] * 3)
    pred = np.array([[1, 1, 0, -1]] * 3)  # -1: ignored, drawn black
    panel = sample_panel(image, truth, pred, [(0, 0, 0), (255, 0, 0)])
    assert panel.shape == (3, 3 * 4 + 4, 3) and panel.dtype == np.uint8
    assert (panel[:, 4:6] == 255).all() and (panel[:, 10:12] == 255).all()  # the separating bars
    assert panel[0, 6:10, 0].tolist() == [0, 255, 255, 0] and panel[0, 12:16, 0].tolist() == [255, 255, 0, 0]
    crop_image, crop_mask = centre_crop(np.zeros((10, 7, 1)), np.zeros((10, 7)), 4)
    assert crop_image.shape == (4, 4, 1) and crop_mask.shape == (4, 4)
