"""The train corpus: bad option values, config files, --resume and --out folders. Each is refused before any
training step with exit status 2 and one line naming the option (or file) and its value, creates no run folder,
and leaves every input byte for byte as it was."""

from pathlib import Path

import numpy as np
import pytest

from unetkit.cli import main
from unetkit.report import FOREGROUND, overlay, overlay_colors

from tests.conftest import TINY_MODEL
from tests.corpus.kit import Untouched, assert_no_output, expect_error, flags

ONE_STEP = ["--epochs", "1", "--steps-per-epoch", "1", *flags(TINY_MODEL)]

# (flags, what the one line says): values the parser takes as numbers, then refused by the options' checks
BAD_VALUES = [
    (["--lr", "0"], "lr must be a positive number such as 1e-3, got 0.0"),
    (["--lr", "-0.01"], "lr must be a positive number such as 1e-3, got -0.01"),
    (["--lr", "nan"], "lr must be a positive number such as 1e-3, got nan"),
    (["--lr", "inf"], "lr must be a positive number such as 1e-3, got inf"),
    (["--time", "nan"], "time must be a positive number of minutes such as 30, got nan"),
    (["--time", "inf"], "time must be a positive number of minutes such as 30, got inf"),
    (["--time", "-1"], "time must be a positive number of minutes such as 30, got -1.0"),
    (["--time", "0"], "time must be a positive number of minutes such as 30, got 0.0"),
    (["--epochs", "0"], "epochs must be >= 1, got 0"),
    (["--epochs", "-5"], "epochs must be >= 1, got -5"),
    (["--batch-size", "0"], "batch_size must be >= 1, got 0"),
    (["--patch-size", "0"], "patch_size must be >= 1, got 0"),
    (["--patch-size", "-24"], "patch_size must be >= 1, got -24"),
    (["--steps-per-epoch", "0"], "steps_per_epoch must be >= 1, got 0"),
    (["--class-weights", "1,2,3"], "class_weights has 3 values but the data has 2 classes (background, foreground); give one weight per class"),
    (["--class-weights", "5"], "class_weights has 1 values but the data has 2 classes"),
    (["--class-weights=-1,1"], "class_weights must be finite numbers >= 0, at least one of them > 0, got [-1.0, 1.0]"),
    (["--class-weights", "0,0"], "class_weights must be finite numbers >= 0, at least one of them > 0, got [0.0, 0.0]"),
    (["--class-weights", "nan,1"], "class_weights must be finite numbers >= 0, at least one of them > 0, got [nan, 1.0]"),
    (["--class-weights", "inf,1"], "class_weights must be finite numbers >= 0, at least one of them > 0, got [inf, 1.0]"),
    (["--dropout", "1"], "dropout must be below 1 (1 drops everything), got 1.0"),
    (["--dropout", "-0.1"], "dropout must be >= 0, got -0.1"),
    (["--dropout", "nan"], "dropout must be >= 0, got nan"),
    (["--momentum", "1.5"], "momentum must be >= 0 and <= 1, got 1.5"),
    (["--momentum", "-0.5"], "momentum must be >= 0 and <= 1, got -0.5"),
    (["--weight-decay", "-1"], "weight_decay must be >= 0, got -1.0"),
    (["--val-fraction", "0"], "val_fraction must be between 0 and 1, got 0.0"),
    (["--val-fraction", "1.5"], "val_fraction must be between 0 and 1, got 1.5"),
    (["--foreground-fraction", "2"], "foreground_fraction must be between 0 and 1, got 2.0"),
    (["--val-every", "0"], "val_every must be >= 1, got 0"),
    (["--tile", "0"], "tile must be >= 1, got 0"),
    (["--seed", "-1"], "seed must be >= 0, got -1"),
    (["--save-every", "-1"], "save_every must be >= 0, got -1.0"),
    (["--workers", "-1"], "workers must be >= 0 (0: sample in the training process), got -1"),
    (["--base-channels", "0"], "base_channels must be >= 1, got 0"),
    (["--depth", "0"], "depth must be >= 1, got 0"),
    (["--threads", "0"], "threads must be >= 1, got 0"),
    (["--boundary-width", "0"], "boundary_width must be >= 1 pixel, got 0"),
    (["--weight-sigma", "0"], "weight_w0 must be >= 0 and weight_sigma > 0, got 10.0 and 0.0"),
    (["--sync-bn"], "sync_bn=true synchronises batch norm, but norm='none'; pass --norm batch or drop --sync-bn"),
    (["--nproc", "0"], "nproc must be >= 1, got 0"),
    (["--max-restarts", "-1"], "max_restarts must be >= 0, got -1"),
]


@pytest.mark.parametrize("argv, said", BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_bad_option_values(tiny_data, tmp_path, capsys, argv, said):
    out = tmp_path / "run"
    inputs = Untouched(tiny_data)
    expect_error(capsys, ["train", "--data", tiny_data, "--out", out, *ONE_STEP, *argv], said)
    assert_no_output(out)
    assert not out.exists()
    inputs.check()


# values that are no number (or no choice) at all: the parser refuses them in one line, exit 2, naming the flag and the value
NOT_NUMBERS = [
    (["--lr", "fast"], "--lr", "'fast'"),
    (["--time", "soon"], "--time", "'soon'"),
    (["--epochs", "1.5"], "--epochs", "'1.5'"),
    (["--batch-size", "four"], "--batch-size", "'four'"),
    (["--class-weights", "abcde"], "--class-weights", "'abcde'"),  # not "5 values"
    (["--scale-range", "wide"], "--scale-range", "'wide'"),
    (["--optimizer", "rmsprop"], "--optimizer", "'rmsprop'"),
    (["--mask-mode", "bogus"], "--mask-mode", "'bogus'"),
    (["--progress=maybe"], "--progress", "'maybe'"),
]


@pytest.mark.parametrize("argv, flag, value", NOT_NUMBERS, ids=[" ".join(a) for a, _, _ in NOT_NUMBERS])
def test_values_of_the_wrong_type_are_refused_by_the_parser(tiny_data, tmp_path, capsys, argv, flag, value):
    out = tmp_path / "run"
    expect_error(capsys, ["train", "--data", tiny_data, "--out", out, *ONE_STEP, *argv], "see 'unetkit", [flag, value])
    assert not out.exists()


# --- config files ------------------------------------------------------------------------------------------------

CONFIGS = {
    "class_weights as a word": ("class_weights: heavy\n", "c.yaml: class_weights must be a list of numbers, such as [1, 3] in YAML or 1,3 on the command line, got 'heavy'"),
    "class_weights as a number": ("class_weights: 3\n", "c.yaml: class_weights must be a list of numbers"),
    "class_weights with a word": ("class_weights: [1, many]\n", "c.yaml: class_weights must be a list of numbers, such as [1, 3] in YAML or 1,3 on the command line, got [1, 'many']"),
    "scale_range as a word": ("scale_range: wide\n", "c.yaml: scale_range must be a list of numbers"),
    "log as a number": ("log: 5\n", "c.yaml: log must be names, such as [a, b] in YAML or a,b on the command line, got 5"),
    "lr as a word": ("lr: fast\n", "c.yaml: lr='fast' is not a number"),
    "lr .nan": ("lr: .nan\n", "c.yaml: lr must be a positive number such as 1e-3, got nan"),
    "time .inf": ("time: .inf\n", "c.yaml: time must be a positive number of minutes such as 30, got inf"),
    "time negative": ("time: -3\n", "c.yaml: time must be a positive number of minutes such as 30, got -3"),
    "val_every a fraction": ("val_every: 1.5\n", "c.yaml: val_every=1.5 is not an integer"),
    "seed a list": ("seed: [4]\n", "c.yaml: seed=[4] is not an integer"),
    "optimizer unknown": ("optimizer: rmsprop\n", "c.yaml: optimizer='rmsprop' is not one of sgd, adam, adamw"),
    "unknown key": ("batch_sise: 2\n", "c.yaml: unknown option 'batch_sise'; did you mean 'batch_size'?"),
    "a list, not a mapping": ("- lr: 0.1\n", "c.yaml: expected a mapping of option: value, got list"),
    "not YAML": ("lr: [0.1\n  : :\n", "c.yaml: not valid YAML"),
    "not UTF-8": (b"lr: \xff\xfe\n", "c.yaml: not valid YAML (not UTF-8 text"),
}


@pytest.mark.parametrize("kind", CONFIGS)
def test_bad_config_files(tiny_data, tmp_path, capsys, kind):
    text, said = CONFIGS[kind]
    config = tmp_path / "c.yaml"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    out = tmp_path / "run"
    inputs = Untouched(tiny_data, config)
    expect_error(capsys, ["train", "--config", config, "--data", tiny_data, "--out", out, *ONE_STEP], said, [config.name])
    assert not out.exists()
    inputs.check()


def test_a_missing_or_folder_config(tiny_data, tmp_path, capsys):
    expect_error(capsys, ["train", "--config", tmp_path / "none.yaml", "--data", tiny_data, "--out", tmp_path / "run"], "none.yaml: config file not found")
    expect_error(capsys, ["train", "--config", tmp_path, "--data", tiny_data, "--out", tmp_path / "run"], "a folder, not a config file")
    assert not (tmp_path / "run").exists()


def test_numbers_yaml_reads_as_text_just_work(tiny_data, tmp_path):
    """``lr: 1e-3`` is a string to YAML 1.1; it is the number everyone means."""
    config = tmp_path / "c.yaml"
    config.write_text("lr: 1e-3\nclass_weights: [1, 2e0]\n")
    assert main(["train", "--config", str(config), "--data", str(tiny_data), "--out", str(tmp_path / "run"), *ONE_STEP]) == 0
    assert "lr: 0.001" in (tmp_path / "run" / "config.yaml").read_text()


# --- --resume -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def done_run(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus-train") / "run"
    assert main(["train", "--data", str(tiny_data), "--out", str(out), *ONE_STEP]) == 0
    return out


def test_resume_a_missing_folder(tmp_path, capsys):
    expect_error(capsys, ["train", "--resume", tmp_path / "nope"], f"--resume {tmp_path / 'nope'}: no such folder")
    assert not (tmp_path / "nope").exists()


def test_resume_a_folder_without_last_pt(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "status.json").write_text('{"status": "nan"}')
    untouched = Untouched(tmp_path / "run")
    expect_error(capsys, ["train", "--resume", tmp_path / "run"], "no last.pt to resume from (status: nan); start a new run with the same --out")
    untouched.check()


def test_resume_a_cut_last_pt(done_run, tmp_path, capsys):
    run = tmp_path / "cut"
    run.mkdir()
    (run / "last.pt").write_bytes((done_run / "last.pt").read_bytes()[:500])
    untouched = Untouched(run)
    expect_error(capsys, ["train", "--resume", run], "not a readable checkpoint", ["last.pt"])
    untouched.check()


def test_resume_on_other_data(done_run, tmp_path, capsys):
    from tests.engine.test_failures import rgb_data

    data = rgb_data(tmp_path / "rgb")
    untouched = Untouched(done_run, data)
    expect_error(capsys, ["train", "--resume", done_run, "--data", data], "the run was trained on 1 channel(s)", [done_run, data, "3 channel(s)"])
    untouched.check()


@pytest.mark.parametrize("extra, said", [
    (["--overwrite"], "drop one of them"),
    (["--padding", "same"], "--padding same would change the network of the run (padding: valid)"),
    (["--lr", "-1"], "lr must be a positive number such as 1e-3, got -1.0"),
    (["--time", "nan"], "time must be a positive number of minutes such as 30, got nan"),
])
def test_resume_with_options_it_cannot_take(done_run, capsys, extra, said):
    untouched = Untouched(done_run)
    expect_error(capsys, ["train", "--resume", done_run, *extra], said)
    untouched.check()


# --- --out and --overwrite ------------------------------------------------------------------------------------------


def test_a_folder_holding_a_run_needs_overwrite(done_run, tiny_data, capsys):
    untouched = Untouched(done_run)
    expect_error(capsys, ["train", "--data", tiny_data, "--out", done_run, *ONE_STEP],
                 f"--out {done_run} already holds a run", [f"--resume {done_run}", "--overwrite"])
    untouched.check()


def test_a_users_own_config_yaml_is_not_replaced(tiny_data, tmp_path, capsys):
    out = tmp_path / "project"
    out.mkdir()
    (out / "config.yaml").write_text("# my settings\nlr: 0.01\n")
    untouched = Untouched(out)
    expect_error(capsys, ["train", "--data", tiny_data, "--out", out, *ONE_STEP], "its config.yaml is not a run's", ["--overwrite"])
    expect_error(capsys, ["train", "--config", out / "config.yaml", "--data", tiny_data, "--out", out, *ONE_STEP], "its config.yaml is your --config file")
    untouched.check()


def test_out_is_a_file(tiny_data, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    untouched = Untouched(tmp_path / "file")
    expect_error(capsys, ["train", "--data", tiny_data, "--out", tmp_path / "file", *ONE_STEP], "is a file, not a folder", ["file"])
    untouched.check()


def test_overwrite_replaces_the_earlier_run_entirely(tiny_data, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--data", str(tiny_data), "--out", str(out), *ONE_STEP, "--epochs", "2"]) == 0
    assert main(["train", "--data", str(tiny_data), "--out", str(out), *ONE_STEP, "--overwrite"]) == 0
    assert (out / "metrics.csv").read_text().count("\n") == 2  # header and this run's one epoch


def test_a_run_that_never_finished_an_epoch_is_taken_over(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    expect_error(capsys, ["train", "--data", tiny_data, "--out", out, *flags(TINY_MODEL), "--time", "1e-9"], "ended before one training step")
    assert main(["train", "--data", str(tiny_data), "--out", str(out), *ONE_STEP]) == 0  # nothing there to lose: no --overwrite needed


# --- what a run leaves is usable: overlays of its binary model read on bright images ------------------------


def test_binary_foreground_overlays_are_vivid_on_bright_and_grey_images():
    """Binary models (and data) colour their foreground white; overlays paint it magenta, which reads where white vanishes."""
    assert overlay_colors([[0, 0, 0], [255, 255, 255], [250, 245, 240], [200, 40, 40]]) == [(0, 0, 0), FOREGROUND, FOREGROUND, (200, 40, 40)]
    image = np.full((4, 4, 1), 200, np.uint8)
    image[0, 0] = 0  # a display stretch needs some range: the rest shows near white, as bright fluorescence does
    mask = np.zeros((4, 4), np.int64)
    mask[2:, 2:] = 1
    drawn = overlay(image, mask, [[0, 0, 0], [255, 255, 255]], ["background", "foreground"]).astype(int)
    tinted, plain = drawn[3, 3], drawn[1, 1]
    assert plain.tolist() == [255, 255, 255] and tinted[1] < plain[1] - 100  # magenta: green drops, the tint is visible
