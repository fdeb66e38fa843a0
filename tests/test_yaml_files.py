"""User YAML is read with bounded alias expansion and named decoding errors (configs, dataset.yaml, search spaces)."""

import pytest
import yaml

from unetkit.config import load_config_file
from unetkit.data.dataset import load_spec
from unetkit.errors import UnetkitError
from unetkit.yaml_files import YamlTooLarge, load_yaml, read_yaml

# 10 values, each level 10 aliases of the one before: 10**9 values once expanded, 0.3 KB on disk
BOMB = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(f"{c}: &{c} [{','.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


def test_a_few_aliases_are_fine_and_shared_values_are_equal():
    assert load_yaml("w: &w [1, 3]\nclass_weights: *w\n") == {"w": [1, 3], "class_weights": [1, 3]}
    assert load_yaml("") is None


def test_alias_bombs_are_refused_before_anything_is_built():
    with pytest.raises(YamlTooLarge, match="aliases expand to more than 100,000 values"):
        load_yaml(BOMB)
    assert len(BOMB) < 400


def test_config_and_dataset_yaml_name_the_file(tmp_path):
    (tmp_path / "cfg.yaml").write_text(BOMB)
    with pytest.raises(UnetkitError, match=r"cfg.yaml: not valid YAML \(its aliases expand to more than 100,000 values; write the values out\)"):
        load_config_file(tmp_path / "cfg.yaml")
    (tmp_path / "dataset.yaml").write_text(BOMB.replace("a:", "classes:", 1))
    with pytest.raises(UnetkitError, match="dataset.yaml.*aliases expand to more than 100,000 values"):
        load_spec(tmp_path)


def test_text_that_is_not_utf8_is_a_named_yaml_error(tmp_path):
    (tmp_path / "cfg.yaml").write_bytes("lr: 0.1  # caf\xe9\n".encode("latin-1"))
    with pytest.raises(yaml.YAMLError, match=r"not UTF-8 text \(byte 14\); save it as UTF-8"):
        read_yaml(tmp_path / "cfg.yaml")
    with pytest.raises(UnetkitError, match=r"cfg.yaml: not valid YAML \(not UTF-8 text"):
        load_config_file(tmp_path / "cfg.yaml")
