"""exit_code: the one line and the exit status of every failure, as the CLI and the --nproc workers print them."""

import pytest

from unetkit.engine.console import PEER_LOST, exit_code
from unetkit.errors import TrainingInterrupted, UnetkitError, WorkersFailed


@pytest.mark.parametrize(
    "error, code, line",
    [
        (WorkersFailed("rank 1 failed", 1, "unetkit: error: rank 1 failed"), 1, "unetkit: error: rank 1 failed"),
        (WorkersFailed("rank 0 said why", 130, None), 130, ""),  # rank 0 printed it already
        (TrainingInterrupted("stopped at epoch 1, step 2"), 130, "unetkit: interrupted: stopped at epoch 1, step 2"),
        (UnetkitError("data/: not found"), 2, "unetkit: error: data/: not found"),
        (KeyboardInterrupt(), 130, "unetkit: interrupted"),
    ],
)
def test_each_failure_prints_one_line_and_returns_its_status(error, code, line, capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("TORCHELASTIC_ERROR_FILE", raising=False)
    assert exit_code(error, debug=False) == code
    assert capsys.readouterr().err.strip() == line


def test_debug_and_crashes_raise(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(UnetkitError, match="bad"):
        exit_code(UnetkitError("bad"), debug=True)
    assert exit_code(TrainingInterrupted("x"), debug=True) == 130  # not a bug to debug: no traceback
    with pytest.raises(ValueError, match="a bug"):
        exit_code(ValueError("a bug"), debug=False)


def test_other_ranks_write_the_error_file_and_a_lost_peer_exits_3(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(tmp_path / "error.json"))
    assert exit_code(UnetkitError("data/: not found"), debug=False) == 2
    assert capsys.readouterr().err == ""  # rank 0 prints it; rank 1's copy is for torchrun's report
    assert '"message": "unetkit: error: data/: not found"' in (tmp_path / "error.json").read_text()
    lost = RuntimeError("[gloo/transport/tcp/pair.cc:534] Connection closed by peer")
    assert exit_code(lost, debug=False) == PEER_LOST
    assert "rank 1 stopped: another process of the run failed" in (tmp_path / "error.json").read_text()
