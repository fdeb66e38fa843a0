"""Training-loop hooks: called in order, with the rows of metrics.csv; an exception ends the run with state saved."""

import csv

import pytest

import unetkit
from tests.conftest import TINY_MODEL
from unetkit.engine.callbacks import Callback


class Recorder(Callback):
    def __init__(self, fail_at=None):
        self.events, self.fail_at = [], fail_at

    def on_train_begin(self, view):
        self.events.append(("begin", len(view.val_images), view.meta["classes"]))

    def on_epoch_end(self, row, view):
        self.events.append(("epoch", row["epoch"], row["val_dice"]))
        assert view.model.training
        if row["epoch"] == self.fail_at:
            raise RuntimeError("stop here")

    def on_train_end(self, result, view):
        self.events.append(("end", result.epochs))


def test_hooks_see_each_epoch_row(tiny_data, tmp_path):
    rec = Recorder()
    result = unetkit.train(data=str(tiny_data), out=str(tmp_path / "run"), epochs=2, steps_per_epoch=2, callbacks=[rec], **TINY_MODEL)
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert rec.events[0][0] == "begin" and rec.events[0][1] >= 1
    assert [e[1] for e in rec.events if e[0] == "epoch"] == [1, 2]
    assert [round(e[2], 6) for e in rec.events if e[0] == "epoch"] == [round(float(r["val_dice"]), 6) for r in rows]
    assert rec.events[-1] == ("end", result.epochs)


def test_exception_in_hook_ends_run_after_saving(tiny_data, tmp_path):
    rec = Recorder(fail_at=1)
    with pytest.raises(RuntimeError, match="stop here"):
        unetkit.train(data=str(tiny_data), out=str(tmp_path / "run"), epochs=3, steps_per_epoch=2, callbacks=[rec], **TINY_MODEL)
    assert (tmp_path / "run" / "last.pt").is_file()
    assert len(list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))) == 1
    assert not any(e[0] == "end" for e in rec.events)
