"""No command replaces what the user has: predict and check plan their outputs before writing, train refuses a folder that holds a run."""

import pytest
from PIL import Image

from tests.inference.test_stream import make_checkpoint, noise
from unetkit.cli import main


@pytest.fixture
def model(tmp_path):
    return make_checkpoint(tmp_path / "m.pt")


def test_out_folder_holding_an_input_file_is_refused_and_the_input_kept(model, tmp_path, capsys):
    data = tmp_path / "d"
    data.mkdir()
    Image.fromarray(noise((40, 50))).save(data / "a.png")
    before = (data / "a.png").read_bytes()
    assert main(["predict", "--model", str(model), str(data / "a.png"), "--out", str(data), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"unetkit: error: --out: {data / 'a.png'} would overwrite the input {data / 'a.png'}; choose a --out that holds no inputs"
    assert (data / "a.png").read_bytes() == before and sorted(p.name for p in data.iterdir()) == ["a.png"]


def test_colliding_output_names_are_refused_before_anything_is_written(model, tmp_path, capsys):
    data = tmp_path / "d"
    data.mkdir()
    for name in ("a.png", "a_overlay.png"):
        Image.fromarray(noise((40, 50))).save(data / name)
    out = tmp_path / "out"
    assert main(["predict", "--model", str(model), str(data), "--out", str(out), "--overlay", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{data / 'a.png'} and {data / 'a_overlay.png'} would both write {out / 'a_overlay.png'}; rename one of them" in err
    assert not out.exists()
    assert main(["predict", "--model", str(model), str(data), "--out", str(out), "--no-progress"]) == 0  # no overlays: no clash
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "a_overlay.png"]


def test_check_never_writes_weight_maps_or_the_preview_over_the_data(tiny_data, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    assert main(["check", str(data), "--weights", str(data / "masks"), "--no-preview", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"unetkit: error: --weights: {data / 'masks'}") and "would overwrite the input" in err
    mask = next(p for p in sorted((data / "masks").iterdir()))
    assert main(["check", str(data), "--preview", str(mask), "--no-progress"]) == 2
    assert f"--preview: {mask} would overwrite the input {mask}" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in data.rglob("*") if p.is_file()} == before


def test_train_refuses_a_folder_that_holds_a_run_unless_resumed_or_overwritten(tiny_data, tmp_path, capsys):
    from tests.conftest import TINY_MODEL

    model = [x for k, v in TINY_MODEL.items() for x in (f"--{k.replace('_', '-')}", str(v).lower() if isinstance(v, bool) else str(v))]
    out = tmp_path / "run"
    args = ["train", "--data", str(tiny_data), "--out", str(out), "--epochs", "1", "--steps-per-epoch", "1", *model]
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"unetkit: error: {out} already holds a run (config.yaml, metrics.csv, best.pt, last.pt, status.json); continue it "
                   f"with --resume {out}, start over there with --overwrite, or choose another --out")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert main([*args, "--overwrite"]) == 0
    assert main(["train", "--resume", str(out), "--epochs", "2"]) == 0


def test_two_inputs_with_one_name_are_refused_before_anything_is_written(model, tmp_path, capsys):
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        Image.fromarray(noise((40, 50))).save(tmp_path / folder / "a.png")
    out = tmp_path / "out"
    assert main(["predict", "--model", str(model), str(tmp_path / "x" / "a.png"), str(tmp_path / "y" / "a.png"), "--out", str(out)]) == 2
    assert f"{tmp_path / 'x' / 'a.png'} and {tmp_path / 'y' / 'a.png'} would both write {out / 'a.png'}" in capsys.readouterr().err
    assert not out.exists()
