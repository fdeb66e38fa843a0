"""Focal and Tversky losses: exact values on tiny tensors, their identities with CE and soft Dice, ignored
pixels, gradients, the options that set them, and short training runs with them."""

import csv
import json
import math

import pytest
import torch
import torch.nn.functional as F
import yaml

import unetkit
import unetkit.engine.trainer as trainer_module
from tests.conftest import TINY_MODEL
from tests.corpus.kit import expect_error, flags
from unetkit.cli import main
from unetkit.config import TrainConfig, make_config
from unetkit.errors import UnetkitError
from unetkit.loss_names import LOSSES
from unetkit.losses import IGNORE, focal_loss, segmentation_loss, soft_dice_loss, tversky_loss

NEW_KINDS = ("focal", "focal+dice", "tversky", "ce+tversky", "focal+tversky")


def two_pixels() -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 2, 1, 2) logits whose softmax is (1/4, 3/4) at pixel a and (1/2, 1/2) at pixel b; targets 1 and 0."""
    logits = torch.tensor([[[[0.0, 0.0]], [[math.log(3), 0.0]]]])
    return logits, torch.tensor([[[1, 0]]])


def random_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(2, 3, 5, 6) logits and targets with every class present and one ignored row."""
    torch.manual_seed(seed)
    logits = torch.randn(2, 3, 5, 6) * 3
    target = torch.randint(0, 3, (2, 5, 6))
    target[0, 0] = IGNORE
    return logits, target


def test_focal_loss_hand_values():
    logits, target = two_pixels()  # p_t = 3/4 at a, 1/2 at b
    a, b = math.log(4 / 3), math.log(2)  # -log p_t
    assert focal_loss(logits, target).item() == pytest.approx((a / 16 + b / 4) / 2)
    assert focal_loss(logits, target, gamma=1.0).item() == pytest.approx((a / 4 + b / 2) / 2)
    weighted = focal_loss(logits, target, class_weights=torch.tensor([1.0, 3.0]))  # a is class 1 (w 3), b class 0 (w 1)
    assert weighted.item() == pytest.approx((3 * a / 16 + b / 4) / 4)
    assert focal_loss(logits, torch.tensor([[[1, IGNORE]]])).item() == pytest.approx(a / 16)


def test_focal_with_gamma_0_is_cross_entropy_also_class_weighted():
    logits, target = random_batch()
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE)
    assert focal_loss(logits, target, gamma=0.0).item() == pytest.approx(ce.item(), rel=1e-6)
    w = torch.tensor([0.5, 2.0, 1.0])
    weighted_ce = F.cross_entropy(logits, target, weight=w, ignore_index=IGNORE)
    assert focal_loss(logits, target, gamma=0.0, class_weights=w).item() == pytest.approx(weighted_ce.item(), rel=1e-6)
    same = segmentation_loss(logits, target, "focal", w, focal_gamma=0.0), segmentation_loss(logits, target, "ce", w)
    assert same[0].item() == pytest.approx(same[1].item(), rel=1e-6)


def test_focal_fades_out_easy_pixels():
    logits, target = random_batch(1)
    values = [focal_loss(logits, target, gamma=g).item() for g in (0.0, 0.5, 1.0, 2.0, 5.0)]
    assert values == sorted(values, reverse=True) and values[-1] > 0


def test_tversky_hand_values():
    logits, target = two_pixels()
    # class 0: g = (0, 1), p = (1/4, 1/2): TP 1/2, FP 1/4, FN 1/2; class 1: g = (1, 0), p = (3/4, 1/2): TP 3/4, FP 1/2, FN 1/4
    t0, t1 = 0.5 / (0.5 + 0.3 * 0.25 + 0.7 * 0.5), 0.75 / (0.75 + 0.3 * 0.5 + 0.7 * 0.25)
    assert tversky_loss(logits, target, smooth=0.0).item() == pytest.approx(1 - (t0 + t1) / 2)
    s0, s1 = 1.0 / (0.5 + 0.3 * 0.25 + 0.7 * 0.5 + 0.5), 1.25 / (0.75 + 0.3 * 0.5 + 0.7 * 0.25 + 0.5)  # default smooth 0.5
    assert tversky_loss(logits, target).item() == pytest.approx(1 - (s0 + s1) / 2)
    swapped = 0.5 / (0.5 + 0.7 * 0.25 + 0.3 * 0.5), 0.75 / (0.75 + 0.7 * 0.5 + 0.3 * 0.25)
    assert tversky_loss(logits, target, alpha=0.7, beta=0.3, smooth=0.0).item() == pytest.approx(1 - sum(swapped) / 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tversky_with_equal_halves_is_soft_dice(seed):
    logits, target = random_batch(seed)
    assert tversky_loss(logits, target, 0.5, 0.5).item() == pytest.approx(soft_dice_loss(logits, target).item(), rel=1e-6, abs=1e-7)
    for smooth in (0.0, 2.0):  # Tversky's smooth sits beside TP, Dice's beside 2 TP
        dice = soft_dice_loss(logits, target, smooth=smooth).item()
        assert tversky_loss(logits, target, 0.5, 0.5, smooth=smooth / 2).item() == pytest.approx(dice, rel=1e-6, abs=1e-7)
    halves = dict(tversky_alpha=0.5, tversky_beta=0.5)
    for tversky, dice in (("tversky", "dice"), ("ce+tversky", "ce+dice"), ("focal+tversky", "focal+dice")):
        a, b = segmentation_loss(logits, target, tversky, **halves), segmentation_loss(logits, target, dice)
        assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_tversky_defaults_punish_a_missed_pixel_more_and_a_false_alarm_less_than_dice():
    target = torch.tensor([[[0, 0, 0, 1]]])  # one rare foreground pixel

    def hard(labels):  # (1, 2, 1, 4) logits that predict ``labels`` with certainty
        return F.one_hot(torch.tensor([[labels]]), 2).permute(0, 3, 1, 2).float() * 100 - 50

    missed, false_alarm = hard([0, 0, 0, 0]), hard([1, 0, 0, 1])
    assert tversky_loss(missed, target).item() > soft_dice_loss(missed, target).item()
    assert tversky_loss(false_alarm, target).item() < soft_dice_loss(false_alarm, target).item()
    # missed: class 0 TP 3, FP 1; class 1 FN 1: 1 - (3.5 / 3.8 + 0.5 / 1.2) / 2
    assert tversky_loss(missed, target).item() == pytest.approx(1 - (3.5 / 3.8 + 0.5 / 1.2) / 2, abs=1e-6)


@pytest.mark.parametrize("loss", [focal_loss, tversky_loss])
def test_ignored_pixels_do_not_count_whatever_their_logits(loss):
    logits, target = two_pixels()
    wild = torch.tensor([[[[40.0]], [[-40.0]]]])  # a confident, wrong third pixel ...
    more_logits, more_target = torch.cat([logits, wild], dim=3), torch.tensor([[[1, 0, IGNORE]]])  # ... that is ignored
    assert loss(more_logits, more_target).item() == pytest.approx(loss(logits, target).item(), rel=1e-6)


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_an_all_ignored_batch_gives_zero_and_finite_gradients(kind):
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = segmentation_loss(logits, torch.full((2, 4, 4), IGNORE), kind, torch.tensor([1.0, 2.0, 3.0]))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_focal_gives_zero_for_a_batch_of_zero_weight_pixels():
    logits = torch.randn(1, 2, 3, 3, requires_grad=True)
    loss = focal_loss(logits, torch.zeros(1, 3, 3, dtype=torch.long), class_weights=torch.tensor([0.0, 1.0]))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("kind", NEW_KINDS)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_gradients_are_finite_and_reach_the_logits_even_when_saturated(kind, gamma):
    logits, target = random_batch()
    logits = (logits * 40).requires_grad_()  # many pixels with p_t == 1.0 in float32
    loss = segmentation_loss(logits, target, kind, focal_gamma=gamma)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_the_new_kinds_are_sums_of_their_terms():
    logits, target = random_batch()
    w = torch.tensor([1.0, 2.0, 0.5])
    opts = dict(focal_gamma=1.5, tversky_alpha=0.2, tversky_beta=0.8)
    parts = {"ce": F.cross_entropy(logits, target, weight=w, ignore_index=IGNORE), "dice": soft_dice_loss(logits, target),
             "focal": focal_loss(logits, target, 1.5, IGNORE, w), "tversky": tversky_loss(logits, target, 0.2, 0.8)}  # fmt: skip
    for kind in NEW_KINDS:
        expected = sum(parts[term].item() for term in kind.split("+"))
        assert segmentation_loss(logits, target, kind, w, **opts).item() == pytest.approx(expected, rel=1e-6)


def test_the_options_have_documented_defaults_and_one_list_of_loss_names():
    cfg = TrainConfig()
    assert (cfg.focal_gamma, cfg.tversky_alpha, cfg.tversky_beta) == (2.0, 0.3, 0.7)
    assert set(NEW_KINDS) <= set(LOSSES)
    assert TrainConfig(loss="focal+tversky", focal_gamma=0, tversky_alpha=1, tversky_beta=0).focal_gamma == 0


@pytest.mark.parametrize("bad,message", [
    (dict(focal_gamma=-1.0), "focal_gamma must be >= 0, got -1.0"),
    (dict(tversky_alpha=1.5), "tversky_alpha must be >= 0 and <= 1, got 1.5"),
    (dict(tversky_beta=-0.1), "tversky_beta must be >= 0 and <= 1, got -0.1"),
    (dict(tversky_alpha=0.0, tversky_beta=0.0), "tversky_alpha and tversky_beta are both 0"),
    (dict(loss="dice+focal"), "loss='dice+focal' is not one of ce, dice"),
])  # fmt: skip
def test_bad_values_of_the_new_options_are_refused_in_one_line(bad, message):
    with pytest.raises(UnetkitError, match=message.replace("+", r"\+")) as error:
        make_config(**bad)
    assert "\n" not in str(error.value)


def test_a_bad_value_in_a_config_file_names_the_file(tmp_path):
    f = tmp_path / "cfg.yaml"
    f.write_text("loss: ce+tversky\ntversky_beta: 2\n")
    with pytest.raises(UnetkitError, match=r"cfg.yaml: tversky_beta must be >= 0 and <= 1, got 2"):
        make_config(f)


def test_the_cli_refuses_a_bad_focal_gamma(tiny_data, tmp_path, capsys):
    argv = ["train", "--data", tiny_data, "--out", tmp_path / "run", "--loss", "focal", "--focal-gamma", "-2"]
    expect_error(capsys, argv, "focal_gamma must be >= 0, got -2")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("loss,options", [("focal+dice", dict(focal_gamma=1.0)), ("ce+tversky", dict(tversky_alpha=0.4, tversky_beta=0.6))])
def test_a_short_training_run_with_the_new_losses(tiny_data, tmp_path, monkeypatch, loss, options):
    seen, real = [], trainer_module.segmentation_loss

    def spy(*args, **kwargs):
        seen.append((args[2], kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "segmentation_loss", spy)
    out = tmp_path / "run"
    result = unetkit.train(data=str(tiny_data), out=str(out), epochs=1, steps_per_epoch=2, workers=0, loss=loss, **options, **TINY_MODEL)
    assert json.loads((out / "status.json").read_text())["status"] == "done" and result.steps == 2
    kind, kwargs = seen[-1]
    assert kind == loss and {k: kwargs[k] for k in options} == options
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["loss"] == loss and all(saved[k] == v for k, v in options.items())
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert rows and all(math.isfinite(float(r["train_loss"])) for r in rows)


def test_the_cli_trains_with_a_new_loss_and_shows_the_options(tiny_data, tmp_path, capsys):
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    assert all(flag in text for flag in ("--focal-gamma", "--tversky-alpha", "--tversky-beta", "focal+tversky"))
    out = tmp_path / "run"
    argv = ["train", "--data", str(tiny_data), "--out", str(out), "--epochs", "1", "--steps-per-epoch", "1", "--workers", "0",
            "--loss", "focal+tversky", "--tversky-beta", "0.9", *flags(TINY_MODEL)]  # fmt: skip
    assert main(argv) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["tversky_beta"] == 0.9
