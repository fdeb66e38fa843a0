"""unetkit tune: a tiny search completes, resumes from its SQLite storage, and writes a config train accepts."""

import csv
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

import unetkit  # noqa: E402
from tests.conftest import TINY_MODEL  # noqa: E402
from unetkit.tuning import results as tune_results  # noqa: E402
from unetkit.tuning import space as tune_space  # noqa: E402
from unetkit.tuning import study as tune_study  # noqa: E402
from unetkit.tuning import trial as tune_trial  # noqa: E402
from unetkit.cli import main  # noqa: E402
from unetkit.errors import UnetkitError  # noqa: E402

# Epoch-bounded trials of 2 steps: fast, and the same whatever the machine's speed.
FIXED = dict(TINY_MODEL, epochs=2, steps_per_epoch=2)


def load(out):
    return optuna.load_study(study_name=tune_study.STUDY, storage=f"sqlite:///{out / 'study.db'}")


@pytest.fixture(scope="module")
def search(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("tune") / "search"
    result = unetkit.tune(data=tiny_data, trials=3, time=10, out=out, verbose=False, **FIXED)
    return out, result


def test_search_writes_results_and_trial_0_is_the_defaults(search):
    out, result = search
    assert {"study.db", "best.yaml", "best.pt", "trials.csv", "history.png", "trial_000", "trial_001", "trial_002"} <= {p.name for p in out.iterdir()}
    assert Image.open(out / "history.png").format == "PNG"
    # Three completed trials are too few for importances: said, not drawn.
    assert any("importances need 5 completed trials, this search has 3" in n for n in result.notes)
    trials = sorted(load(out).trials, key=lambda t: t.number)[:3]
    assert trials[0].params == {"lr": 0.001, "optimizer": "adam", "loss": "ce+dice", "augment": "light"}  # the fixed options are not searched
    assert all(t.state == TrialState.COMPLETE for t in trials) and result.complete >= 3
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["trial"] for r in rows[:3]] == ["0", "1", "2"] and rows[0]["note"] == "defaults"
    for r, t in zip(rows, trials):
        assert float(r["val_dice"]) == pytest.approx(t.value, abs=1e-4) and r["epochs"] == "2"
        assert r["run"].endswith(f"trial_{t.number:03d}")
    best = max(trials, key=lambda t: t.value)
    assert result.best_trial == best.number and result.best_dice == pytest.approx(best.value)
    assert result.default_dice == pytest.approx(trials[0].value)
    assert f"| {best.number} | complete | {best.value:.4f} | 2 |" in result.table
    assert (out / "best.pt").read_bytes() == (out / f"trial_{best.number:03d}" / "best.pt").read_bytes()


def test_best_config_is_accepted_by_train(search, tmp_path):
    out, result = search
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["data"] and best["epochs"] == 2 and best["base_channels"] == 4
    assert {k: best[k] for k in result.best_params} == result.best_params and best["time"] > 0
    assert main(["train", "--config", str(out / "best.yaml"), "--out", str(tmp_path / "again"), "--epochs", "1"]) == 0
    cfg = yaml.safe_load((tmp_path / "again" / "config.yaml").read_text())
    assert cfg["epochs"] == 1 and all(cfg[k] == v for k, v in result.best_params.items())


def test_rerun_resumes_and_adds_only_missing_trials(search, capsys):
    out, _ = search
    before = {t.number: t.datetime_start for t in load(out).trials}
    assert len(before) >= 3
    data = yaml.safe_load((out / "best.yaml").read_text())["data"]
    unetkit.tune(data=data, trials=len(before), time=10, out=out, **FIXED)  # all done: nothing runs
    assert f"{len(before)} of {len(before)} trials done" in capsys.readouterr().out
    assert {t.number: t.datetime_start for t in load(out).trials} == before
    unetkit.tune(data=data, trials=len(before) + 1, time=10, out=out, verbose=False, **FIXED)
    after = load(out).trials
    assert len(after) == len(before) + 1 and {t.number: t.datetime_start for t in after if t.number in before} == before
    assert (out / f"trial_{len(before):03d}" / "best.pt").is_file()
    with pytest.raises(UnetkitError, match=r"study.db holds a search of other data, space or fixed options \(fixed: batch_size\)"):
        unetkit.tune(data=data, trials=9, time=10, out=out, verbose=False, **{**FIXED, "batch_size": 3})


def test_interrupted_trial_is_repeated_once(tiny_data, tmp_path):
    out = tmp_path / "search"
    space = {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}
    fixed = dict(FIXED, epochs=1, steps_per_epoch=1)
    unetkit.tune(data=tiny_data, trials=1, time=10, space=space, out=out, verbose=False, **fixed)
    study = load(out)
    stale = study.ask()  # as if the process running this trial had been killed
    tune_space.suggest(stale, "lr", space["lr"])
    unetkit.tune(data=tiny_data, trials=2, time=10, space=space, out=out, verbose=False, **fixed)
    trials = sorted(load(out).trials, key=lambda t: t.number)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[2].params == trials[1].params and trials[2].user_attrs["retry_of"] == 1
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["complete", "interrupted", "complete"] and rows[2]["note"] == "repeats interrupted trial 1"


def test_failed_trial_is_recorded_and_the_search_goes_on(tiny_data, tmp_path, monkeypatch):
    real_train = tune_trial.train

    def train(cfg, **kwargs):  # trial 0 (the defaults, lr 1e-3) trains; any other learning rate "diverges"
        if cfg.lr != 0.001:
            raise UnetkitError("loss became nan at epoch 1, step 2")
        return real_train(cfg, **kwargs)

    monkeypatch.setattr(tune_trial, "train", train)
    out = tmp_path / "search"
    result = unetkit.tune(data=tiny_data, trials=2, time=10, out=out, verbose=False, **dict(FIXED, epochs=1, steps_per_epoch=1))
    assert (result.complete, result.failed, result.best_trial) == (1, 1, 0)
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["complete", "failed"] and rows[1]["note"] == "loss became nan at epoch 1, step 2"
    unetkit.tune(data=tiny_data, trials=2, time=10, out=out, verbose=False, **dict(FIXED, epochs=1, steps_per_epoch=1))
    assert len(load(out).trials) == 2  # a failed trial counts as done


class PruneAfterTrial0(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return trial.number >= 1


def test_pruned_trial_is_recorded_in_its_run_folder(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr(tune_study, "make_pruner", lambda name: PruneAfterTrial0())
    out = tmp_path / "search"
    result = unetkit.tune(data=tiny_data, trials=2, time=10, out=out, verbose=False, **FIXED)
    assert (result.complete, result.pruned, result.best_trial) == (1, 1, 0)
    status = json.loads((out / "trial_001" / "status.json").read_text())
    assert status["status"] == "pruned" and status["epoch"] == 1
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["complete", "pruned"] and rows[1]["note"] == "pruned at epoch 1" and rows[1]["epochs"] == "1"
    assert [r["run"] for r in unetkit.runs(out, sort="run")] == ["trial_000", "trial_001"]


def test_prune_callback_reports_each_validated_epoch():
    class Trial:
        reports, prune = [], False

        def report(self, value, step):
            self.reports.append((value, step))

        def should_prune(self):
            return self.prune

    trial = Trial()
    cb = tune_trial.PruneOnDice(trial)
    cb.on_epoch_end({"epoch": 1, "val_dice": ""}, None)  # not validated this epoch
    cb.on_epoch_end({"epoch": 2, "val_dice": 0.5}, None)
    assert trial.reports == [(0.5, 2)]
    trial.prune = True
    with pytest.raises(optuna.TrialPruned, match="0.2500 at epoch 3"):
        cb.on_epoch_end({"epoch": 3, "val_dice": 0.25}, None)


def test_yaml_space_replaces_the_default(tiny_data, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("lr: {type: float, low: 1e-4, high: 1e-2, log: true}\noptimizer: {type: categorical, choices: [sgd, adamw]}\n")
    out = tmp_path / "search"
    result = unetkit.tune(data=tiny_data, trials=2, time=10, space=space, out=out, verbose=False, **dict(FIXED, epochs=1, steps_per_epoch=1))
    trials = load(out).trials
    assert all(set(t.params) == {"lr", "optimizer"} for t in trials)
    # The default optimizer (adam) is not in this space: trial 0 keeps the default lr and samples the optimizer.
    assert trials[0].params["lr"] == 0.001 and trials[0].params["optimizer"] in ("sgd", "adamw")
    assert "the default optimizer='adam' is outside the search space; trial 0 samples it" in result.notes


@pytest.mark.parametrize(
    "text, message",
    [
        ("lrr: {type: float, low: 0.1, high: 1}", r"space.yaml: unknown option 'lrr'; did you mean 'lr'\?"),
        ("lr: {type: uniform, low: 1, high: 2}", r"space.yaml: lr: type must be float, int or categorical, got 'uniform'"),
        ("lr: {type: float, low: 0.01, high: 0.001}", r"space.yaml: lr: low \(0.01\) must be less than high \(0.001\)"),
        ("lr: {type: float, low: 1e-4}", r"space.yaml: lr: type float needs low and high"),
        ("lr: {type: float, low: 1e-4, high: 1e-2, logg: true}", r"space.yaml: lr: unknown field\(s\) logg for type float"),
        ("lr: {type: float, low: 1e-4, high: 1e-2, log: true, step: 0.001}", r"space.yaml: lr: log and step cannot be combined"),
        ("lr: {type: float, low: x, high: 1}", r"space.yaml: lr: low must be a number, got 'x'"),
        ("lr: [0.1, 0.2]", r"space.yaml: lr: expected \{type: float\|int\|categorical, ...\}"),
        ("optimizer: {type: categorical, choices: [sgd, rmsprop]}", r"space.yaml: optimizer: optimizer='rmsprop' is not one of sgd, adam, adamw"),
        ("optimizer: {type: categorical, choices: []}", r"space.yaml: optimizer: choices must be a non-empty list"),
        ("optimizer: {type: float, low: 1, high: 2}", r"space.yaml: optimizer: takes str values, not a range; use type: categorical"),
        ("base_channels: {type: float, low: 8, high: 16}", r"space.yaml: base_channels: takes whole numbers; use type: int"),
        ("base_channels: {type: categorical, choices: [8, 12.5]}", r"space.yaml: base_channels: 12.5 is not a valid int"),
        ("patch_size: {type: int, low: 0, high: 64}", r"space.yaml: patch_size: patch_size must be >= 1, got 0"),
        ("class_weights: {type: categorical, choices: [1]}", r"space.yaml: class_weights: list options cannot be searched"),
        ("data: {type: categorical, choices: [a, b]}", r"space.yaml: data: set by tune itself"),
        ("- lr", r"space.yaml: expected a mapping of option"),
        ("lr: {type: float, low: [", r"space.yaml: not valid YAML"),
    ],
)
def test_malformed_space_is_refused_naming_the_key(tmp_path, text, message):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(UnetkitError, match=message):
        tune_space.load_space(path)


def test_space_numbers_written_without_a_dot_are_numbers():
    assert tune_space.check_space({"lr": {"type": "float", "low": "1e-4", "high": 0.01, "log": True}}, "x") == {
        "lr": {"type": "float", "low": 0.0001, "high": 0.01, "log": True}
    }
    assert tune_space.load_space.__doc__ and tune_space.contains({"type": "int", "low": 16, "high": 48, "step": 8}, 32)
    assert not tune_space.contains({"type": "int", "low": 16, "high": 48, "step": 8}, 36)


def test_docs_show_the_default_space():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "tuning.md").read_text()
    block = doc.split("### The default space")[1].split("```yaml\n")[1].split("```")[0]
    assert tune_space.check_space(yaml.safe_load(block), "docs/tuning.md") == tune_space.DEFAULT_SPACE


def test_cli_errors_are_one_line(tiny_data, tmp_path, capsys):
    bad = tmp_path / "space.yaml"
    bad.write_text("lr: {type: float, low: 1, high: 0.1}\n")
    assert main(["tune", "--data", str(tiny_data), "--space", str(bad), "--out", str(tmp_path / "t")]) == 2
    assert capsys.readouterr().err.strip() == f"unetkit: error: {bad}: lr: low (1.0) must be less than high (0.1)"
    space = tmp_path / "lr.yaml"
    space.write_text("lr: {type: float, low: 0.001, high: 0.1}\n")
    assert main(["tune", "--data", str(tiny_data), "--space", str(space), "--lr", "0.01", "--out", str(tmp_path / "t")]) == 2
    assert "every option of the search space is fixed" in capsys.readouterr().err


def test_importances_plot_with_enough_trials(tmp_path):
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-2, log=True) * 10 + (t.suggest_categorical("loss", ["ce", "dice"]) == "ce"), n_trials=8)
    assert tune_results.plot_study(study, tmp_path) == []
    for name in ("history.png", "importances.png"):
        assert Image.open(tmp_path / name).size == (700, 400)
