"""A run that fails says why in one line and leaves its folder honest: a full disk keeps the previous files and
marks the run failed, a non-finite loss names the causes that apply, a resume on other data is refused before a step."""

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

import unetkit
import unetkit.engine.trainer as trainer_module
from tests.conftest import TINY_MODEL
from tests.corpus.kit import Untouched, expect_error, flags
from unetkit.cli import main
from unetkit.config import make_config
from unetkit.engine.callbacks import Callback
from unetkit.engine.run_folder import RunFolder
from unetkit.errors import UnetkitError
from unetkit.files import atomic_write

ONE_STEP = ["--epochs", "1", "--steps-per-epoch", "1", *flags(TINY_MODEL)]
FULL = "cannot write (no space left on device); free space on that disk or choose an output folder on another one"


def fill_disk_at(monkeypatch, name: str, nth: int) -> None:
    """From the ``nth`` write of ``name`` on, fsync fails as on a full disk (where delayed allocation reports it)."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to tell which file an fsync is for")
    real, calls = os.fsync, {"n": 0}

    def fsync(fd):
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(f".{Path(name).stem}.tmp-"):
            calls["n"] += 1
            if calls["n"] >= nth:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_atomic_write_on_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    target.write_bytes(b"old")
    fill_disk_at(monkeypatch, "last.pt", 1)
    with pytest.raises(UnetkitError) as error:
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"new")
    assert str(error.value) == f"{target}: {FULL}; the previous last.pt is kept"
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    with pytest.raises(UnetkitError) as error:
        with atomic_write(tmp_path / "new" / "last.pt") as tmp:
            tmp.write_bytes(b"new")
    assert str(error.value) == f"{tmp_path / 'new' / 'last.pt'}: {FULL}"  # nothing to keep: not said


def test_torch_writing_onto_a_full_disk_is_named_as_one(tmp_path, monkeypatch):
    """torch.save to a path reports a full disk as "RuntimeError: [enforce fail at inline_container.cc] ...": /dev/full
    makes its writes fail with ENOSPC, and the disk reports no free space."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    run = RunFolder(tmp_path)
    run.save_last({"w": torch.zeros(2)}, {"epoch": 1}, progress="{}")
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **kw: real_save(obj, "/dev/full", *a, **kw))
    monkeypatch.setattr(os, "statvfs", lambda path: os.statvfs_result((4096, 4096, 100, 0, 0, 100, 0, 0, 0, 255)))
    with pytest.raises(UnetkitError) as error:
        run.save_last({"w": torch.ones(2)}, {"epoch": 2}, progress="{}")
    assert str(error.value) == f"{run.last}: {FULL}; the previous last.pt is kept"
    monkeypatch.undo()
    assert run.load_last()["meta"] == {"epoch": 1} and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


@pytest.mark.parametrize("name, nth, kept", [("last.pt", 2, True), ("metrics.csv", 1, False), ("best.pt", 1, False)])
def test_a_full_disk_during_training_fails_the_run_in_one_line(tiny_data, tmp_path, monkeypatch, capsys, name, nth, kept):
    out = tmp_path / "run"
    fill_disk_at(monkeypatch, name, nth)
    message = expect_error(capsys, ["train", "--data", tiny_data, "--out", out, *ONE_STEP, "--epochs", "3"], f"{out / name}: {FULL}")
    assert message.endswith(f"the previous {name} is kept") == kept
    monkeypatch.undo()
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "failed" and status["error"].startswith(f"{out / name}: cannot write (no space left on device)")
    assert not [p for p in out.iterdir() if ".tmp-" in p.name], "no partial file may stay"
    if kept:  # the commit of epoch 1 is intact, and the run continues from it
        assert json.loads(RunFolder(out).load_last()["progress"])["epoch"] == 1 and status["epoch"] == 2
        assert unetkit.train(resume=str(out)).epochs == 3


def test_a_failing_callback_marks_the_run_failed(tiny_data, tmp_path):
    class Boom(Callback):
        def on_epoch_end(self, row, view):
            raise RuntimeError("tracker unreachable\nsecond line")

    out = tmp_path / "run"
    with pytest.raises(RuntimeError):
        unetkit.train(data=str(tiny_data), out=str(out), epochs=2, steps_per_epoch=1, callbacks=[Boom()], **TINY_MODEL)
    assert json.loads((out / "status.json").read_text()) == {"status": "failed", "epoch": 1, "step": 1, "error": "RuntimeError: tracker unreachable"}


def test_a_time_budget_too_short_for_one_step_says_so_and_fails_the_run(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    expect_error(capsys, ["train", "--data", tiny_data, "--out", out, *flags(TINY_MODEL), "--time", "1e-9"],
                 "the time budget (--time 1e-09 min) ended before one training step; give more --time")
    assert json.loads((out / "status.json").read_text())["status"] == "failed"


def test_an_epoch_limit_that_ends_before_a_step_is_not_called_a_time_budget(tiny_data, tmp_path):
    trainer = trainer_module.Trainer(make_config(data=str(tiny_data), out=str(tmp_path / "run"), epochs=1, workers=0, **TINY_MODEL))
    trainer.batches.close()
    with pytest.raises(UnetkitError, match=r"^the epoch limit \(--epochs 1\) ended before one training step; give more --epochs$") as error:
        trainer._finish(None)
    assert "None" not in str(error.value)


# --- a non-finite loss: the causes that apply, and last.pt only when there is one ------------------------------------


@pytest.fixture
def background_only(tmp_path) -> Path:
    """Three images whose masks hold background only: with --class-weights 0,1 every patch weighs 0."""
    data = tmp_path / "bg"
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (data / sub).mkdir(parents=True)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(data / "images" / f"{i}.png")
        Image.fromarray(np.zeros((40, 40), np.uint8)).save(data / "masks" / f"{i}.png")
    return data


def test_a_batch_of_zero_weight_pixels_trains_on_instead_of_stopping(background_only, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--data", str(background_only), "--out", str(out), *ONE_STEP, "--class-weights", "0,1", "--loss", "ce"]) == 0
    assert json.loads((out / "status.json").read_text())["status"] == "done"


def test_overwrite_clears_the_earlier_run_so_a_failure_names_no_stale_checkpoint(tiny_data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    unetkit.train(data=str(tiny_data), out=str(out), epochs=1, steps_per_epoch=1, **TINY_MODEL)
    forced_nan(monkeypatch)
    message = expect_error(capsys, ["train", "--data", tiny_data, "--out", out, *ONE_STEP, "--overwrite"], "loss became nan")
    assert "last.pt" not in message
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "status.json"]  # nothing of the earlier run passes for this one's


def forced_nan(monkeypatch):
    monkeypatch.setattr(trainer_module, "segmentation_loss", lambda logits, *a, **kw: logits.float().sum() * float("nan"))


def test_reduced_precision_is_named_when_it_is_used(tiny_data, tmp_path, monkeypatch, capsys):
    forced_nan(monkeypatch)
    message = expect_error(capsys, ["train", "--data", tiny_data, "--out", tmp_path / "run", *ONE_STEP, "--precision", "bf16"],
                           "likely causes: bf16 arithmetic overflows where fp32 does not (try --precision fp32)")
    assert "learning rate" not in message  # no step was taken at it yet
    message = expect_error(capsys, ["train", "--data", tiny_data, "--out", tmp_path / "run2", *ONE_STEP, "--precision", "fp32"],
                           "likely causes: the network's output is not finite on its first batch here (check the data with unetkit check")
    assert "bf16" not in message and "class-weights" not in message and "learning rate" not in message


def test_outliers_in_the_images_are_named(tmp_path, monkeypatch, capsys):
    """A fill value in a million-pixel image lies ~1000 standard deviations out (the most one pixel of N can: sqrt(N))."""
    data, val = tmp_path / "train", tmp_path / "val"
    for folder, size in ((data, 1100), (val, 32)):
        for sub in ("images", "masks"):
            (folder / sub).mkdir(parents=True)
        image = np.full((size, 1000), 0.5, np.float32)
        image[0, 0] = -9999.0
        tifffile.imwrite(folder / "images" / "a.tif", image)
        mask = np.zeros((size, 1000), np.uint8)
        mask[size // 2 :] = 255
        Image.fromarray(mask).save(folder / "masks" / "a.png")
    forced_nan(monkeypatch)
    expect_error(capsys, ["train", "--data", data, "--val", val, "--out", tmp_path / "run", *ONE_STEP, "--precision", "fp32"],
                 "the training images hold outliers 1.05e+03 standard deviations from their mean")


# --- resume: only on the data and network it was trained with ------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resume") / "run"
    unetkit.train(data=str(tiny_data), out=str(out), epochs=1, steps_per_epoch=1, **TINY_MODEL)
    return out


def rgb_data(folder: Path, classes: int = 2) -> Path:
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3 if classes == 2 else 1), dtype=np.uint8).squeeze()).save(folder / "images" / f"{i}.png")
        Image.fromarray((np.arange(40 * 40).reshape(40, 40) % classes).astype(np.uint8) * (255 if classes == 2 else 1)).save(folder / "masks" / f"{i}.png")
    if classes > 2:
        (folder / "dataset.yaml").write_text(f"mask_mode: index\nclasses: [{', '.join(f'c{k}' for k in range(classes))}]\n")
    return folder


@pytest.mark.parametrize("kind, said", [
    ("channels", "but the data {data} has 3 channel(s) and classes background, foreground"),
    ("classes", "but the data {data} has 1 channel(s) and classes c0, c1, c2"),
])
def test_resume_on_other_data_is_refused_before_a_step(finished_run, tmp_path, capsys, kind, said):
    data = rgb_data(tmp_path / kind, 2 if kind == "channels" else 3)
    untouched = Untouched(finished_run, data)
    expect_error(capsys, ["train", "--resume", finished_run, "--data", data, "--epochs", "2"],
                 f"--resume {finished_run}: the run was trained on 1 channel(s) and classes background, foreground, " + said.format(data=data),
                 ["drop --data"])
    untouched.check()


@pytest.mark.parametrize("extra, said", [
    (["--base-channels", "8"], "--base-channels 8 would change the network of the run (base_channels: 4)"),
    (["--depth", "2"], "--depth 2 would change the network of the run (depth: 3)"),
    (["--out", "elsewhere"], "continues the run in its own folder; drop --out elsewhere"),
    (["--overwrite"], "continues a run and --overwrite starts a new one there; drop one of them"),
    (["--config", "c.yaml"], "--resume takes the run's own config.yaml; drop --config"),
])
def test_resume_refuses_what_it_cannot_honour(finished_run, tmp_path, monkeypatch, capsys, extra, said):
    monkeypatch.chdir(tmp_path)
    untouched = Untouched(finished_run)
    expect_error(capsys, ["train", "--resume", finished_run, *extra], said)
    untouched.check()
    assert list(tmp_path.iterdir()) == []


def test_a_second_ctrl_c_marks_the_run_interrupted(tiny_data, tmp_path, monkeypatch):
    def hard_stop(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module.Trainer, "step", hard_stop)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        unetkit.train(data=str(tiny_data), out=str(out), epochs=1, steps_per_epoch=1, **TINY_MODEL)
    assert json.loads((out / "status.json").read_text()) == {"status": "interrupted", "epoch": 0, "step": 0,
                                                             "error": "stopped at once by a second Ctrl-C; no state was saved"}
