"""Several processes: real 2-process runs over loopback (gloo), and the pieces they rely on.

The runs are tiny (3 epochs of 4 steps); most of their time is the start-up of torchrun and its workers.
"""

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import unetkit
from tests.conftest import TINY_MODEL
from unetkit.config import make_config
from unetkit.data.sampler import PatchSampler
from unetkit.engine.console import PEER_LOST
from unetkit.engine.distributed import RankBatches, World, continue_progress, lr_scale
from unetkit.engine.launcher import WORKER, failure_message, launch_command
from unetkit.engine.worker import Job, read_job, write_job
from unetkit.errors import UnetkitError
from unetkit.models.sync_bn import sync_batchnorm

# norm=batch with sync_bn: the global batch's statistics, so 2 x 2 patches train as one process's 4 do.
OPTIONS = {**TINY_MODEL, "epochs": 3, "steps_per_epoch": 4, "save_every": 0, "seed": 5, "deterministic": True, "precision": "fp32",
           "device": "cpu", "threads": 1, "loss": "ce", "norm": "batch", "sync_bn": True}  # 1 thread: immune to a busy machine
RUN_FILES = {"best.pt", "last.pt", "config.yaml", "metrics.csv", "curves.png", "status.json"}

# Imported by every Python process of the run (PYTHONPATH); in worker rank RANK it sends SIG to itself at its K-th optimizer step.
KILL_HOOK = textwrap.dedent(
    """
    import os
    if os.environ.get("RANK") is not None and os.environ.get("UNETKIT_TEST_SIGNAL"):
        rank, k, sig = os.environ["UNETKIT_TEST_SIGNAL"].split(":")
        if os.environ["RANK"] == rank:
            import signal, torch
            step, calls = torch.optim.Adam.step, {"n": 0}
            def patched(self, *a, **kw):
                calls["n"] += 1
                if calls["n"] == int(k):
                    os.kill(os.getpid(), getattr(signal, sig))
                return step(self, *a, **kw)
            torch.optim.Adam.step = patched
    """
)


def rows(run):
    return list(csv.DictReader((run / "metrics.csv").open()))


def weights(path):
    return torch.load(path, weights_only=True)["model"]


def progress(run):
    return json.loads(torch.load(run / "last.pt", weights_only=True)["progress"])


@pytest.fixture(scope="module")
def two(tiny_data, tmp_path_factory):
    """An uninterrupted `--nproc 2` run (through the API, as `unetkit train --nproc 2` calls it), and what it printed."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    result = unetkit.train(data=str(tiny_data), out=str(out), nproc=2, **OPTIONS)
    return out, result


def test_two_processes_write_the_run_once(two):
    run, result = two
    assert {p.name for p in run.iterdir()} == RUN_FILES
    assert (result.epochs, result.steps, result.run_dir) == (3, 12, run)
    table = rows(run)
    assert [int(r["step"]) for r in table] == [4, 8, 12] and {r["global_batch"] for r in table} == {"4"}  # 2 processes x 2 patches
    assert json.loads((run / "status.json").read_text())["status"] == "done"
    text = (run / "config.yaml").read_text()
    assert "# processes: 2\n# global_batch: 4\n# lr: 0.001\n# steps_per_epoch: 4\n" in text
    assert make_config(run / "config.yaml").sync_bn  # the notes are comments: the file still loads as --config
    saved = progress(run)
    assert saved["batches"] == 24 and saved["world_size"] == 2  # 12 global steps x 2 ranks: batch numbers 0..23, each once


def test_loss_curve_matches_one_process_with_the_same_global_batch(two, tiny_data, tmp_path, monkeypatch):
    """One process trained on the same 4 patches per step: batch k = the sampler's batches 2k and 2k+1 of 2 patches.

    Then only the order of floating-point sums differs (DDP averages two per-rank means and sums the
    batch-norm statistics over ranks; one process takes one mean over 4 patches): 1e-7 relative after the
    first steps. Adam amplifies it where a gradient is near zero (its first updates are about lr x sign(g)),
    so after 12 steps the per-epoch mean losses were seen to differ by up to 5e-5 relative, and validation
    Dice by up to 7e-4: hence rtol 5e-4 and atol 3e-3. Without sync_bn, where each rank normalises with its
    own 2 patches, they differed by 1e-3 to 4e-2, so the test tells the two apart.
    """
    batch = PatchSampler.batch

    def two_halves(self, n, index):
        a, b = batch(self, n // 2, 2 * index), batch(self, n // 2, 2 * index + 1)
        return np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]]), None

    monkeypatch.setattr(PatchSampler, "batch", two_halves)
    one = unetkit.train(data=str(tiny_data), out=str(tmp_path / "one"), **{**OPTIONS, "batch_size": 4, "sync_bn": False})
    ddp = rows(two[0])
    assert np.allclose([float(r["train_loss"]) for r in ddp], [r["train_loss"] for r in one.history], rtol=5e-4, atol=0)
    assert np.allclose([float(r["val_dice"]) for r in ddp], [r["val_dice"] for r in one.history], rtol=0, atol=3e-3)


def train_nproc_2(tmp_path, data, out, signal_at: str) -> subprocess.CompletedProcess:
    """`unetkit train --nproc 2` in a subprocess whose worker RANK sends itself SIG at its K-th step (``"RANK:K:SIG"``)."""
    (tmp_path / "hook").mkdir(exist_ok=True)
    (tmp_path / "hook" / "sitecustomize.py").write_text(KILL_HOOK)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "hook"), os.environ.get("PYTHONPATH", "")]),
           "UNETKIT_TEST_SIGNAL": signal_at}
    flags = [x for k, v in OPTIONS.items() for x in (f"--{k.replace('_', '-')}", str(v).lower() if isinstance(v, bool) else str(v))]
    return subprocess.run([sys.executable, "-m", "unetkit", "train", "--nproc", "2", "--data", str(data), "--out", str(out), *flags],
                          env=env, capture_output=True, text=True, timeout=240)


def test_ctrl_c_on_one_rank_stops_all_at_the_same_step(tiny_data, tmp_path):
    out = tmp_path / "run"
    stopped = train_nproc_2(tmp_path, tiny_data, out, "1:2:SIGINT")  # only rank 1 sees it; rank 0 must stop there too, not hang
    assert stopped.returncode == 130
    assert stopped.stderr.strip().splitlines() == [  # rank 0's line, once
        f"unetkit: interrupted: stopped at epoch 1, step 2; state saved in {out / 'last.pt'}; continue with: unetkit train --resume {out} --nproc 2"
    ]
    assert json.loads((out / "status.json").read_text())["status"] == "interrupted"
    assert progress(out)["step"] == 2 and progress(out)["batches"] == 4


def test_killed_worker_ends_the_run_in_one_line_and_resume_finishes_it(two, tiny_data, tmp_path):
    out = tmp_path / "run"
    killed = train_nproc_2(tmp_path, tiny_data, out, "1:6:SIGKILL")  # rank 1 dies in epoch 2; last.pt holds epoch 1
    assert killed.returncode == 1
    assert killed.stderr.strip().splitlines() == [
        f"unetkit: error: training worker failed (rank 1, exit -9/SIGKILL); the last checkpoint {out / 'last.pt'} is intact; "
        f"continue with: unetkit train --resume {out} --nproc 2"
    ]
    assert progress(out)["step"] == 4 and len(rows(out)) == 1
    shutil.copytree(out, tmp_path / "run1")

    resumed = unetkit.train(resume=str(out), nproc=2)  # 2 processes, as it ran
    assert (resumed.epochs, resumed.steps) == (3, 12) and len(rows(out)) == 3
    for key, value in weights(two[0] / "last.pt").items():  # the batches and the dropout seeds follow the step: nothing changed
        assert torch.equal(weights(out / "last.pt")[key], value), key

    with pytest.warns(UserWarning, match="sync_bn has no effect in a single process"):
        one = unetkit.train(resume=str(tmp_path / "run1"))  # 1 process: 2 patches per step, batch numbers go on
    assert one.steps == 12 and [r["global_batch"] for r in rows(tmp_path / "run1")] == ["4", "2", "2"]
    assert progress(tmp_path / "run1")["batches"] == 8 + 8  # 4 steps x 2 ranks, then 8 steps x 1


# ---- the pieces, without processes


class Numbers:
    """A stand-in sampler whose batch is its own number."""

    def batch(self, n, index):
        return index


def test_ranks_take_distinct_batches_whose_union_is_one_process_s():
    steps, world, offset = 5, 3, 7
    taken = [RankBatches(Numbers(), offset, rank, world).batch(2, s) for s in range(steps) for rank in range(world)]
    assert taken == list(range(offset, offset + steps * world))  # global step s: batches offset + s*W .. offset + s*W + W-1


def test_progress_keeps_its_place_when_the_process_count_changes():
    saved = {"step": 30, "epoch": 2, "epoch_step": 6, "steps_per_epoch": 12, "batches": 60}
    continue_progress(saved, 24, World())  # 2 processes -> 1: the default epoch has twice the steps
    assert (saved["step"], saved["epoch_step"], saved["batches"], saved["world_size"]) == (60, 12, 60, 1)
    same = {"step": 7, "epoch": 0, "epoch_step": 7}  # written before these keys existed
    continue_progress(same, 10, World())
    assert (same["step"], same["epoch_step"], same["batches"], same["steps_per_epoch"]) == (7, 7, 7, 10)


def test_lr_scaling():
    assert [lr_scale(rule, 4) for rule in ("none", "linear", "sqrt")] == [1.0, 4.0, 2.0]
    assert lr_scale("sqrt", 1) == lr_scale("linear", 1) == 1.0


def test_sync_bn_needs_batch_norm_and_warns_in_one_process():
    with pytest.raises(UnetkitError, match="pass --norm batch or drop --sync-bn"):
        make_config(norm="group", sync_bn=True)
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(3))
    with pytest.warns(UserWarning, match="no effect in a single process"):
        assert sync_batchnorm(model, 1, torch.device("cpu")) is model


def test_launcher_refuses_what_would_not_work(monkeypatch, tmp_path):
    with pytest.raises(UnetkitError, match="--max-restarts needs --nproc"):
        unetkit.train(data=str(tmp_path), max_restarts=2)
    with pytest.raises(UnetkitError, match="callbacks cannot reach"):
        unetkit.train(data=str(tmp_path), nproc=2, callbacks=[object()])
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UnetkitError, match="already runs under it .WORLD_SIZE=2.; drop --nproc"):
        unetkit.train(data=str(tmp_path), nproc=2)


def test_worker_job_reads_back_the_same_options(tmp_path):
    options = {"data": "d", "epochs": 3, "lr": 0.0005, "class_weights": [1.0, 3.0], "sync_bn": True, "norm": "batch", "val": None}
    cfg = make_config(**options)
    write_job(tmp_path / "job.yaml", Job(cfg, resume=True, force=True, callbacks="unetkit.tracking:run_callbacks"))
    job = read_job(tmp_path / "job.yaml")
    assert job == Job(cfg, True, True, "unetkit.tracking:run_callbacks")
    assert {k: getattr(job.cfg, k) for k in options} == options
    command = launch_command(2, 0, tmp_path / "report.json", tmp_path / "job.yaml")
    assert command[-3:] == ["-m", WORKER, str(tmp_path / "job.yaml")]  # the worker takes the job, never CLI arguments
    assert "--nproc" not in command and "train" not in command  # workers never launch again


def test_failure_message_names_the_root_cause(tmp_path):
    (tmp_path / "last.pt").touch()
    killed = {"failures": [{"rank": 0, "exitcode": PEER_LOST, "message": "unetkit: error: rank 0 stopped: another process failed"},
                           {"rank": 1, "exitcode": -9, "message": ""}]}
    error = failure_message(killed, tmp_path, 2)
    assert error.exit_code == 1 and error.line == f"unetkit: error: {error}"
    assert str(error) == (f"training worker failed (rank 1, exit -9/SIGKILL); the last checkpoint {tmp_path / 'last.pt'} is intact; "
                          f"continue with: unetkit train --resume {tmp_path} --nproc 2")
    alone = {"failures": [{"rank": 1, "exitcode": 2, "message": "unetkit: error: data/masks/3.png is empty"},
                          {"rank": 0, "exitcode": PEER_LOST, "message": "unetkit: error: rank 0 stopped: another process failed"}]}
    assert (failure_message(alone, tmp_path, 2).line, failure_message(alone, tmp_path, 2).exit_code) == ("unetkit: error: data/masks/3.png is empty", 2)
    said = {"failures": [{"rank": 1, "exitcode": 130, "message": "unetkit: interrupted: x"},
                         {"rank": 0, "exitcode": -15, "message": "unetkit: interrupted: x", "printed": True}]}
    assert (failure_message(said, tmp_path, 2).line, failure_message(said, tmp_path, 2).exit_code) == (None, 130)  # rank 0 printed it
    unsaid = {"failures": [said["failures"][0], {"rank": 0, "exitcode": -15, "message": ""}]}  # torchrun ended rank 0 first
    assert failure_message(unsaid, tmp_path, 2).line == "unetkit: interrupted: x"
    assert failure_message({"signal": "SIGINT"}, tmp_path, 2).exit_code == 130
    crashed = failure_message({"failures": [{"rank": 0, "exitcode": 1, "message": ""}]}, tmp_path / "new", 2)
    assert str(crashed).endswith("it failed before the first checkpoint; start the run again")
