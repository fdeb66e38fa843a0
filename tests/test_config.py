"""Typed config: defaults, YAML merge, unknown keys with suggestions, validation."""

import pytest
import yaml

from unetkit.config import TrainConfig, dump_config, make_config
from unetkit.errors import UnetkitError


def test_defaults_are_planned_else_cpu_sized_and_the_paper_network_is_a_preset():
    cfg = TrainConfig()  # auto: the engine plans it from the data; without a plan it is the cpu preset
    assert cfg.model_size == "auto" and (cfg.base_channels, cfg.depth, cfg.patch_size, cfg.padding) == (32, 4, 128, "valid")
    assert (TrainConfig(model_size="paper").base_channels, TrainConfig(model_size="paper").depth) == (64, 5)
    assert TrainConfig(model_size="paper", depth=4).depth == 4  # explicit options beat the preset
    with pytest.raises(UnetkitError, match="model_size='huge' is not one of auto, cpu, paper"):
        TrainConfig(model_size="huge")
    assert cfg.resolved_epochs == 50 and cfg.resolved_lr == 1e-3
    assert TrainConfig(optimizer="sgd").resolved_lr == 1e-2
    assert TrainConfig(time=5).resolved_epochs is None


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "cfg.yaml"
    f.write_text("lr: 0.01\nbatch_size: 2\n")
    cfg = make_config(f, batch_size=8, epochs=None)
    assert (cfg.lr, cfg.batch_size, cfg.epochs) == (0.01, 8, None)


def test_unknown_key_suggests(tmp_path):
    f = tmp_path / "cfg.yaml"
    f.write_text("learning_rat: 0.1\n")
    with pytest.raises(UnetkitError, match="cfg.yaml: unknown option 'learning_rat'"):
        make_config(f)
    with pytest.raises(UnetkitError, match="did you mean 'batch_size'"):
        make_config(batch_sise=3)


@pytest.mark.parametrize("bad,match", [(dict(padding="full"), "padding='full'"), (dict(epochs=0), "epochs"), (dict(val_fraction=1.5), "val_fraction")])
def test_invalid_values(bad, match):
    with pytest.raises(UnetkitError, match=match):
        TrainConfig(**bad)


def test_dump_round_trip(tmp_path):
    cfg = TrainConfig(data="d", lr=0.5, class_weights=[1.0, 2.0])
    dump_config(cfg, tmp_path / "config.yaml")
    assert make_config(tmp_path / "config.yaml") == cfg
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["lr"] == 0.5


@pytest.mark.parametrize("bad, message", [
    (dict(lr=-0.001), "lr must be a positive number such as 1e-3, got -0.001"),
    (dict(lr=float("nan")), "lr must be a positive number such as 1e-3, got nan"),
    (dict(dropout=1.0), "dropout must be below 1 (1 drops everything), got 1.0"),
    (dict(weight_decay=-1), "weight_decay must be >= 0, got -1"),
    (dict(seed=-1), "seed must be >= 0, got -1"),
    (dict(momentum=1.5), "momentum must be >= 0 and <= 1, got 1.5"),
    (dict(class_weights=[1, -2]), "class_weights must be finite numbers >= 0, at least one of them > 0, got [1, -2]"),
    (dict(class_weights=[0.0, 0.0]), "class_weights must be finite numbers >= 0, at least one of them > 0, got [0.0, 0.0]"),
    (dict(epochs=1.5), "epochs=1.5 is not an integer"),
    (dict(batch_size="4"), "batch_size='4' is not an integer"),
    (dict(time=float("nan")), "time must be a positive number of minutes such as 30, got nan"),
    (dict(time=float("inf")), "time must be a positive number of minutes such as 30, got inf"),
    (dict(time=-1), "time must be a positive number of minutes such as 30, got -1"),
    (dict(time=0), "time must be a positive number of minutes such as 30, got 0"),
])
def test_values_the_optimizer_or_model_would_reject_are_refused_by_name(bad, message):
    with pytest.raises(UnetkitError) as error:
        make_config(data="d", **bad)
    assert str(error.value) == message


LIST_OF_NUMBERS = "must be a list of numbers, such as [1, 3] in YAML or 1,3 on the command line, got"


@pytest.mark.parametrize("bad, message", [
    (dict(class_weights="heavy"), f"class_weights {LIST_OF_NUMBERS} 'heavy'"),  # not "has 5 values"
    (dict(class_weights="13"), f"class_weights {LIST_OF_NUMBERS} '13'"),
    (dict(class_weights=3), f"class_weights {LIST_OF_NUMBERS} 3"),
    (dict(class_weights=[1, "x"]), f"class_weights {LIST_OF_NUMBERS} [1, 'x']"),
    (dict(class_weights=[True, 1]), f"class_weights {LIST_OF_NUMBERS} [True, 1]"),
    (dict(scale_range="wide"), f"scale_range {LIST_OF_NUMBERS} 'wide'"),
    (dict(scale_range={"low": 1}), f"scale_range {LIST_OF_NUMBERS} {{'low': 1}}"),
    (dict(log=5), "log must be names, such as [a, b] in YAML or a,b on the command line, got 5"),
    (dict(log=["tensorboard", 3]), "log must be names, such as [a, b] in YAML or a,b on the command line, got ['tensorboard', 3]"),
])
def test_list_options_name_the_type_they_expect(bad, message):
    with pytest.raises(UnetkitError) as error:
        make_config(data="d", **bad)
    assert str(error.value) == message


def test_list_options_take_lists_tuples_and_comma_separated_names():
    cfg = make_config(data="d", class_weights=(1, 3), scale_range=[0.8, 1.25], log="tensorboard")
    assert (cfg.class_weights, cfg.scale_range, cfg.log) == ([1, 3], [0.8, 1.25], ["tensorboard"])


def test_yaml_errors_name_the_file_and_numbers_written_as_text_are_numbers(tmp_path):
    f = tmp_path / "cfg.yaml"
    f.write_text("class_weights: heavy\n")
    with pytest.raises(UnetkitError, match=r"^.*cfg\.yaml: class_weights must be a list of numbers.*got 'heavy'$"):
        make_config(f)
    assert make_config(f, class_weights=[1, 2]).class_weights == [1, 2]  # the flag overrides it: no error about the file
    f.write_text("time: .nan\n")
    with pytest.raises(UnetkitError, match=r"cfg\.yaml: time must be a positive number of minutes such as 30, got nan"):
        make_config(f)
    f.write_text("lr: 1e-3\nepochs: 1e1\nclass_weights: [1, 3e0]\nbatch_size: four\n")  # YAML 1.1 reads 1e-3 as text
    with pytest.raises(UnetkitError, match=r"cfg\.yaml: batch_size='four' is not an integer"):
        make_config(f)
    cfg = make_config(f, batch_size=2)
    assert (cfg.lr, cfg.epochs, type(cfg.epochs), cfg.class_weights) == (0.001, 10, int, [1, 3.0])
    with pytest.raises(UnetkitError, match="a folder, not a config file"):
        make_config(tmp_path)
