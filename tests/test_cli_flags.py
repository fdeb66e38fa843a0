"""The command line is generated from the typed options: one spelling per idea on every command, one default per option."""

import subprocess
import sys
from dataclasses import MISSING, fields

import pytest

from unetkit.cli import COMMANDS, build_parser, parse, spell_booleans
from unetkit.commands import DemoOptions, PredictOptions, ServeOptions
from unetkit.config import TrainConfig
from unetkit.options import field_type


def help_text(command: str) -> str:
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    return sub.format_help()


@pytest.mark.parametrize("argv, expected", [
    (["train", "--data", "d", "--deterministic"], True),
    (["train", "--data", "d", "--no-deterministic"], False),
    (["train", "--data", "d", "--deterministic", "false"], False),
    (["train", "--data", "d", "--deterministic", "TRUE"], True),
    (["train", "--data", "d", "--deterministic=no"], False),
    (["train", "--data", "d", "--deterministic=on"], True),
])
def test_train_booleans_bare_negated_and_valued(argv, expected):
    assert parse(argv)["deterministic"] is expected


@pytest.mark.parametrize("command, extra", [
    ("train", ["--data", "d"]), ("predict", ["--model", "m.pt", "--out", "o", "a.png"]), ("evaluate", []),
    ("demo", []), ("recipe", ["examples/isbi2012"]), ("check", ["data"]),
])
def test_no_progress_is_one_spelling_everywhere(command, extra):
    assert parse([command, *extra, "--no-progress"])["progress"] is False
    assert parse([command, *extra, "--progress", "false"])["progress"] is False
    assert parse([command, *extra, "--progress"])["progress"] is True


def test_only_given_options_are_passed_so_the_api_states_each_default():
    args = parse(["predict", "--model", "m.pt", "--out", "o", "a.png", "b.png", "--overlay", "--tile", "256"])
    assert args == {"command": "predict", "debug": False, "json": False, "model": "m.pt", "out": "o", "inputs": ["a.png", "b.png"],
                    "overlay": True, "tile": 256}


def test_a_bool_flag_never_swallows_a_positional():
    args = parse(["predict", "--model", "m.pt", "--out", "o", "--overlay", "true.png"])
    assert args["overlay"] is True and args["inputs"] == ["true.png"]


def test_spell_booleans_rewrites_values_and_refuses_others():
    assert spell_booleans(["--a", "yes", "--b", "0", "--c", "x.png"], {"--a", "--b", "--c"}) == ["--a", "--no-b", "--c", "x.png"]
    with pytest.raises(ValueError, match="--a: expected true or false, got 'maybe'"):
        spell_booleans(["--a=maybe"], {"--a"})


def test_a_bad_switch_value_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_status:
        parse(["train", "--data", "d", "--deterministic=maybe"])
    assert exit_status.value.code == 2
    assert capsys.readouterr().err.strip() == "unetkit: error: --deterministic: expected true or false, got 'maybe'; see 'unetkit --help'"


def test_lists_comma_separated():
    args = parse(["train", "--data", "d", "--class-weights", "1,3", "--log", "tensorboard,mlflow", "--scale-range", "0.8,1.25"])
    assert args["class_weights"] == [1.0, 3.0] and args["log"] == ["tensorboard", "mlflow"] and args["scale_range"] == [0.8, 1.25]


def test_negatable_output():
    assert parse(["check", "data", "--no-preview"])["preview"] is None
    assert parse(["check", "data", "--preview", "p.png"])["preview"] == "p.png"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_option_has_its_flag_and_its_default_in_the_help(command):
    text = " ".join(help_text(command).split())
    spec = COMMANDS[command]
    for i, cls in enumerate(spec.options):
        for f in fields(cls):
            if not f.metadata["cli"] or (i and f.name in spec.skip):
                continue
            flag = f.name if f.metadata["positional"] else "--" + f.name.replace("_", "-")
            assert flag in text or (f.metadata.get("metavar") or "") in text, (command, f.name)
            if f.default not in (MISSING, None, "") and field_type(cls, f) is not bool:
                assert f"(default: {f.default})" in text, (command, f.name)


def test_one_meaning_per_flag_name_across_commands():
    """A flag that two commands share has the same type there (a switch is never also a file name)."""
    kinds: dict[str, set] = {}
    for spec in COMMANDS.values():
        for cls in spec.options:
            for f in fields(cls):
                kinds.setdefault(f.name, set()).add(field_type(cls, f))
    assert {name: k for name, k in kinds.items() if len(k) > 1} == {}
    assert "json" not in kinds and "report" in kinds and "report_dir" in kinds  # --json is the print switch; files have their own names
    assert "workers" in {f.name for f in fields(TrainConfig)} and "workers" not in {f.name for f in fields(ServeOptions)}


def test_required_flags_and_positionals():
    with pytest.raises(SystemExit):
        parse(["predict", "a.png"])  # --model and --out are required
    assert parse(["runs"]) == {"command": "runs", "debug": False, "json": False}
    assert parse(["runs", "mine", "--sort", "lr", "--reverse", "--json"])["dir"] == "mine"


def test_bad_values_are_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        parse(["predict", "--model", "m", "--out", "o", "a.png", "--stream", "sometimes"])
    assert "invalid choice: 'sometimes'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["train", "--batch-size", "four"])


def test_options_check_names_values_and_requirements():
    from unetkit.errors import UnetkitError

    assert PredictOptions.build("predict", model="m", inputs=["a"], out="o").tile == 512
    with pytest.raises(UnetkitError, match="predict: unknown option 'overlayy'; did you mean 'overlay'"):
        PredictOptions.build("predict", model="m", inputs=["a"], out="o", overlayy=True)
    with pytest.raises(UnetkitError, match="predict: missing out"):
        PredictOptions.build("predict", model="m", inputs=["a"])
    with pytest.raises(UnetkitError, match="batch_size must be >= 1, got 0"):
        PredictOptions.build("predict", model="m", inputs=["a"], out="o", batch_size=0)
    with pytest.raises(UnetkitError, match="epochs=1.5 is not an integer"):
        DemoOptions.build("demo", epochs=1.5)
    with pytest.raises(UnetkitError, match="nodata_class must be >= 0 and <= 65535, got -1"):
        PredictOptions.build("predict", model="m", inputs=["a"], out="o", nodata_class=-1)


def test_help_and_import_do_not_load_torch():
    code = "import sys, unetkit, unetkit.cli; unetkit.cli.build_parser(); print(sorted(m for m in ('torch', 'numpy', 'cv2', 'scipy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    shown = subprocess.run([sys.executable, "-m", "unetkit", "train", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--deterministic, --no-deterministic" in shown and "--no-progress" in shown


def test_train_end_to_end_with_bare_and_valued_switches(tiny_data, tmp_path):
    """The README's spellings reach the run: bare --deterministic, --no-progress, --report false."""
    import yaml

    from tests.conftest import TINY_MODEL
    from unetkit.cli import main

    model = [x for k, v in TINY_MODEL.items() if not isinstance(v, bool) for x in (f"--{k.replace('_', '-')}", str(v))]
    out = tmp_path / "run"
    assert main(["train", "--data", str(tiny_data), "--out", str(out), "--epochs", "1", "--steps-per-epoch", "1",
                 "--deterministic", "--no-progress", "--report", "false", *model]) == 0  # fmt: skip
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["deterministic"] is True and cfg["progress"] is False and cfg["report"] is False
    assert not (out / "report").exists()
