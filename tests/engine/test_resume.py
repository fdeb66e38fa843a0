"""Crash safety: a run killed at any moment and resumed ends bit-identical to one never interrupted."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from tests.conftest import TINY_MODEL

RUNNER = textwrap.dedent(
    """
    import os, signal, sys, torch
    mode, k, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    calls = {"n": 0}
    if mode == "kill-step" or mode == "int-step":
        step = torch.optim.Adam.step
        def patched(self, *a, **kw):
            calls["n"] += 1
            if calls["n"] == k:
                os.kill(os.getpid(), signal.SIGKILL if mode == "kill-step" else signal.SIGINT)
            return step(self, *a, **kw)
        torch.optim.Adam.step = patched
    if mode == "kill-save":
        save = torch.save
        def patched(obj, f, *a, **kw):
            name = str(getattr(f, "name", f))  # a path or an open file
            if ".last." in os.path.basename(name):
                calls["n"] += 1
                if calls["n"] == k:  # leave a half-written temporary file, then die
                    save(obj, f, *a, **kw)
                    getattr(f, "flush", lambda: None)()
                    os.truncate(name, os.path.getsize(name) // 2)
                    os.kill(os.getpid(), signal.SIGKILL)
            return save(obj, f, *a, **kw)
        torch.save = patched
    from unetkit.cli import main
    raise SystemExit(main(args))
    """
)

# fp32 pinned: precision=auto times bf16 against fp32 at start-up, and a busy machine could flip one run to bf16.
OPTIONS = {**TINY_MODEL, "dropout": 0.3, "epochs": 3, "steps_per_epoch": 4, "save_every": 0, "seed": 5, "precision": "fp32"}


def run(tmp_path, mode, k, args):
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    return subprocess.run([sys.executable, str(script), mode, str(k), *args], capture_output=True, text=True, timeout=300)


def train_args(data, out, extra=()):
    opts = [x for key, v in OPTIONS.items() for x in (f"--{key.replace('_', '-')}", str(v).lower() if isinstance(v, bool) else str(v))]
    return ["train", "--data", str(data), "--out", str(out), "--deterministic", "true", *opts, *extra]


def weights(path):
    return torch.load(path, weights_only=True)["model"]


def assert_identical(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), f"{key} differs after resume"


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    done = run(tmp, "none", 0, train_args(tiny_data, tmp / "run"))
    assert done.returncode == 0, done.stderr
    return tmp / "run"


@pytest.mark.parametrize("mode,k", [("kill-step", 6), ("kill-save", 2), ("kill-save", 1)])
def test_sigkill_then_resume_is_bit_identical(tiny_data, tmp_path, reference, mode, k):
    out = tmp_path / "run"
    killed = run(tmp_path, mode, k, train_args(tiny_data, out))
    assert killed.returncode == -9
    resumed = run(tmp_path, "none", 0, ["train", "--resume", str(out)])
    if mode == "kill-save" and k == 1:
        # killed while writing the very first checkpoint: nothing to resume, and nothing truncated
        assert resumed.returncode == 2 and "no last.pt to resume from" in resumed.stderr
        assert not (out / "last.pt").exists()
        return
    assert resumed.returncode == 0, resumed.stderr
    assert_identical(out / "last.pt", reference / "last.pt")
    assert_identical(out / "best.pt", reference / "best.pt")
    assert [p.name for p in out.iterdir() if ".tmp-" in p.name] == [], "stale temporary files must be cleaned up"
    assert (out / "metrics.csv").read_text() .count("\n") == 4  # header + 3 epochs, no duplicates


def test_ctrl_c_saves_mid_epoch_and_resumes_exactly(tiny_data, tmp_path, reference):
    out = tmp_path / "run"
    stopped = run(tmp_path, "int-step", 6, train_args(tiny_data, out))
    assert stopped.returncode == 130
    assert "continue with: unetkit train --resume" in stopped.stderr
    assert json.loads((out / "status.json").read_text())["status"] == "interrupted"
    state = torch.load(out / "last.pt", weights_only=True)
    assert json.loads(state["progress"])["step"] == 6  # the interrupted step completed, then it stopped
    resumed = run(tmp_path, "none", 0, ["train", "--resume", str(out)])
    assert resumed.returncode == 0, resumed.stderr
    assert_identical(out / "last.pt", reference / "last.pt")


def test_nan_loss_stops_keeps_checkpoint_and_guards_resume(tiny_data, tmp_path):
    out = tmp_path / "run"
    args = train_args(tiny_data, out, ["--lr", "1e30", "--optimizer", "sgd"])
    failed = run(tmp_path, "none", 0, args)
    assert failed.returncode == 2
    assert "learning rate (--lr 1e+30) is too high" in failed.stderr and "epoch" in failed.stderr and "Traceback" not in failed.stderr
    assert ("last good state is" in failed.stderr) == (out / "last.pt").exists()  # last.pt named only when there is one
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "nan" and "learning rate" in status["causes"][-1]
    refused = run(tmp_path, "none", 0, ["train", "--resume", str(out)])
    if (out / "last.pt").exists():
        assert refused.returncode == 2 and "change what caused it (--lr, --class-weights, --precision), or pass --force" in refused.stderr
        ok = run(tmp_path, "none", 0, ["train", "--resume", str(out), "--lr", "0.001"])
        assert ok.returncode == 0, ok.stderr
    else:  # diverged in the first epoch: there is no good checkpoint to continue from
        assert refused.returncode == 2 and "no last.pt" in refused.stderr
