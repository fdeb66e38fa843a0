"""``unetkit plan`` and ``train`` with model_size auto: the plan is printed, applied under the given options, and
kept in the run folder as plan.yaml."""

import json

import pytest
import yaml

import unetkit
from tests.conftest import TINY_MODEL
from unetkit.cli import main
from unetkit.errors import UnetkitError

TINY = {k: v for k, v in TINY_MODEL.items() if k != "model_size"}  # the network's size given, the rest planned


def test_plan_prints_each_option_with_its_reason_and_writes_nothing(tiny_data, capsys):
    before = sorted(p.name for p in tiny_data.rglob("*"))
    assert main(["plan", str(tiny_data), "--json", "--no-progress"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["options"]["patch_size"] == 64 and document["options"]["augment"] == "light"  # no larger than the images
    assert set(document["options"]) == set(document["reasons"]) and document["budget"] == {"minutes": None, "epochs": None}
    assert document["fingerprint"]["pairs"] == 5 and document["fingerprint"]["channels"] == 1  # the training split (1 of 6 held out)
    assert main(["plan", str(tiny_data), "--patch-size", "32", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "patch_size     32" in text and "given (the plan: 64" in text and "batch_size" in text
    assert sorted(p.name for p in tiny_data.rglob("*")) == before


def test_plan_with_a_time_budget_times_the_candidate_network(tiny_data):
    document = unetkit.plan(tiny_data, time=2, threads=1, progress=False, base_channels=4, patch_size=32)
    est = document["estimates"]
    assert est["step_seconds"] > 0 and est["steps"] == pytest.approx(2 * 60 * 0.9 / est["step_seconds"], rel=0.01)
    assert "s per step here" in document["reasons"]["base_channels"] and document["machine"]["cpu"]


def test_plan_refuses_a_preset():
    with pytest.raises(UnetkitError, match="--model-size cpu is a fixed preset, so there is nothing to plan"):
        unetkit.plan("anything", model_size="cpu")


def test_train_applies_the_plan_under_the_given_options_and_keeps_it(tiny_data, tmp_path):
    out = tmp_path / "run"
    unetkit.train(data=str(tiny_data), out=str(out), epochs=1, steps_per_epoch=2, loss="dice", **TINY)
    plan = yaml.safe_load((out / "plan.yaml").read_text())
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model_size"] == "auto" and config["loss"] == "dice" and config["patch_size"] == 24
    assert "loss" in plan["given"] and plan["reasons"]["loss"].startswith("given (the plan: ce+dice")
    planned = {k: v for k, v in plan["options"].items() if k not in plan["given"]}
    assert planned and all(config[k] == v for k, v in planned.items())
    unetkit.train(data=str(tiny_data), out=str(out), epochs=1, steps_per_epoch=2, overwrite=True, **TINY_MODEL)
    assert not (out / "plan.yaml").exists()  # a preset run leaves no plan of an earlier run behind
