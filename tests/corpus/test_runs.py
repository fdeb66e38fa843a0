"""The runs corpus: ``unetkit runs`` over folders where one run is damaged lists every run, marks the damaged one
with a short reason, changes nothing, and never shows a traceback; a bad folder or sort key is one line, exit 2."""

import json

import pytest
import torch

from unetkit.cli import main
from unetkit.config import make_config
from unetkit.engine.run_folder import RunFolder

from tests.corpus.kit import Untouched, expect_error


def sound_run(folder, dice=0.8):
    run = RunFolder(folder)
    run.prepare()
    run.write_config(make_config(data="cells", out=str(folder)))
    run.write_metrics([{"epoch": 1, "step": 5, "time_s": 30.0, "lr": 0.001, "train_loss": 0.4, "val_dice": dice, "val_iou": dice - 0.1,
                        "val_pixel_accuracy": 0.9}])  # fmt: skip
    run.save_best({"w": torch.zeros(1)}, {"epoch": 1})
    run.save_last({"w": torch.zeros(1)}, {"epoch": 1}, progress="{}")
    run.write_status(status="done", epoch=1, step=5)
    return run


DAMAGE = {
    "status.json empty": (lambda r: r.status.write_text(""), "status.json unreadable"),
    "status.json not JSON": (lambda r: r.status.write_text("{'status': done"), "status.json unreadable"),
    "status.json a number": (lambda r: r.status.write_text("7"), "status.json is not a mapping"),
    "status.json binary": (lambda r: r.status.write_bytes(b"\xff\xd8\xff\xe0"), "status.json unreadable"),
    "status.json missing": (lambda r: r.status.unlink(), "status.json missing"),
    "config.yaml not YAML": (lambda r: r.config.write_text("a: [1\n b: :"), "config.yaml unreadable"),
    "config.yaml a list": (lambda r: r.config.write_text("- 1\n- 2\n"), "config.yaml is not a mapping"),
    "config.yaml missing": (lambda r: r.config.unlink(), "config.yaml missing"),
    "metrics.csv binary": (lambda r: r.metrics.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00"), "metrics.csv"),
    "metrics.csv not UTF-8": (lambda r: r.metrics.write_bytes(b"epoch,step\n\xff\xfe,1\n"), "metrics.csv unreadable"),
    "metrics.csv foreign": (lambda r: r.metrics.write_text("name,score\nx,1\n"), "metrics.csv has no epoch,step header"),
    "best.pt empty": (lambda r: r.best.write_bytes(b""), "best.pt is not a checkpoint"),
    "best.pt cut short": (lambda r: r.best.write_bytes(r.best.read_bytes()[:200]), "best.pt is not a checkpoint"),
    "best.pt missing": (lambda r: r.best.unlink(), "best.pt missing"),
    "last.pt text": (lambda r: r.last.write_text("checkpoint"), "last.pt is not a checkpoint"),
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_run_is_listed_with_its_reason(tmp_path, capsys, kind):
    damage, reason = DAMAGE[kind]
    root = tmp_path / "runs"
    sound_run(root / "good", dice=0.9)
    damage(sound_run(root / "bad", dice=0.7))
    untouched = Untouched(root)
    assert main(["runs", str(root)]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err and out.err == ""
    lines = out.out.splitlines()
    assert lines[0].split()[-1] == "problem" and len(lines) == 3
    assert lines[1].startswith("good ") and reason in next(line for line in lines if line.startswith("bad "))
    for sort in ("dice", "status", "lr", "data", "minutes"):
        assert main(["runs", str(root), "--sort", sort, "--json"]) == 0
        rows = {r["run"]: r for r in json.loads(capsys.readouterr().out)}
        assert rows["good"]["problem"] is None and reason in rows["bad"]["problem"]
    untouched.check()  # listing changes nothing


@pytest.mark.parametrize("argv, said", [
    (["{root}/nope"], "nope: no such folder; pass the folder that holds your runs"),
    (["{root}/file.txt"], "file.txt: a file, not a folder; pass the folder that holds your runs"),
    (["{root}", "--sort", "dise"], "cannot sort by 'dise'; did you mean 'dice'?"),
    (["{root}", "--sort", ""], "cannot sort by ''"),
])
def test_bad_folder_or_sort_key(tmp_path, capsys, argv, said):
    (tmp_path / "file.txt").write_text("x")
    untouched = Untouched(tmp_path)
    expect_error(capsys, ["runs", *[a.format(root=tmp_path) for a in argv]], said)
    untouched.check()
