"""The planner's rules on exact fingerprints, with a step time given as a function (no hardware in the loop)."""

import pytest

from unetkit.planning.fingerprint import ClassStats, Fingerprint
from unetkit.planning.rules import Budget, plan_options, up_direction


def _fp(classes, shape=(512, 512), pairs=20, channels=1) -> Fingerprint:
    return Fingerprint(pairs=pairs, read=pairs, median_shape=shape, min_shape=shape, channels=channels, dtype="uint8",
                       percentiles=[(0.0, 128.0, 255.0)] * channels, classes=classes)


def _class(name, fraction, width, row=0.5, images=20) -> ClassStats:
    return ClassStats(name=name, fraction=fraction, images=images, objects=10, width=width, row=row)


def _isbi_like():
    return _fp([_class("membrane", 0.22, 5), _class("cell", 0.78, 33)])


def test_the_patch_spans_four_widths_of_the_widest_common_structure_within_bounds():
    assert plan_options(_isbi_like(), Budget()).options["patch_size"] == 256  # 4 x 33 = 132, raised to the 256 minimum
    wide = _fp([_class("road", 0.3, 107), _class("sky", 0.7, 45)], shape=(360, 480))
    assert plan_options(wide, Budget()).options["patch_size"] == 352  # 428 capped by the 360-px side (-> 352)
    rare_but_wide = _fp([_class("background", 0.995, 3), _class("lake", 0.005, 300)])
    assert plan_options(rare_but_wide, Budget(), fixed={}).options["patch_size"] == 256  # a class under 1% does not set it
    small = _fp([_class("a", 0.5, 30), _class("b", 0.5, 30)], shape=(100, 90))
    assert plan_options(small, Budget()).options["patch_size"] == 96  # no larger than the images
    assert plan_options(_fp([_class("a", 0.5, 200), _class("b", 0.5, 400)], shape=(2000, 3000)), Budget()).options["patch_size"] == 512


def test_batch_and_depth_follow_the_patch():
    plan = plan_options(_isbi_like(), Budget())
    assert (plan.options["batch_size"], plan.options["depth"]) == (4, 5)  # 4 patches of 256; 256 / 2^4 = 16 at the bottom
    assert (plan.options["padding"], plan.options["norm"]) == ("same", "batch")
    assert "valid mode would spend 66% of each step on the 184-px context" in plan.reasons["padding"]  # 1 - (256/440)^2
    plan = plan_options(_isbi_like(), Budget(), fixed={"patch_size": 128})
    assert plan.options["patch_size"] == 128 and plan.reasons["patch_size"].startswith("given (the plan: 256")
    assert (plan.options["batch_size"], plan.options["depth"]) == (16, 5)  # planned around the given patch: 4 x 256^2 / 128^2
    assert plan.planned["patch_size"] == 256 and plan.fixed == {"patch_size": 128}
    street = plan_options(_fp([_class("road", 0.5, 107), _class("sky", 0.5, 45)], shape=(360, 480)), Budget())
    assert (street.options["batch_size"], street.options["norm"]) == (2, "instance")  # 352-px patches: 2 a step


def test_the_width_is_sized_by_the_measured_step_time_and_the_budget():
    seen = []

    def step_time(options):
        seen.append(options["base_channels"])
        return {32: 0.2, 16: 0.06}[options["base_channels"]]

    plan = plan_options(_isbi_like(), Budget(minutes=20), step_time)
    assert plan.options["base_channels"] == 32 and plan.estimates["steps"] == int(20 * 60 * 0.9 / 0.2) and seen == [32]
    plan = plan_options(_isbi_like(), Budget(minutes=0.5), step_time)  # 135 steps at 32 (< 300): narrower
    assert plan.options["base_channels"] == 16 and plan.estimates == {**plan.estimates, "step_seconds": 0.06, "steps": 450}
    assert plan_options(_isbi_like(), Budget(epochs=10), step_time).options["base_channels"] == 32  # no minutes: not timed


def test_an_up_direction_keeps_to_left_right_flips():
    street = _fp([_class("sky", 0.2, 40, row=0.15), _class("road", 0.5, 100, row=0.8), _class("car", 0.3, 20)], channels=3)
    assert up_direction(street).name == "sky"
    plan = plan_options(street, Budget())
    assert plan.options["augment"] == "none" and plan.options["hflip"] is True and "'sky' keeps to the top" in plan.reasons["hflip"]
    assert plan_options(_isbi_like(), Budget()).options["augment"] == "light"
    small_high = _fp([_class("bird", 0.01, 5, row=0.1), _class("rest", 0.99, 50)])  # too small a share to say "up"
    assert up_direction(small_high) is None


def test_imbalance_brings_rare_class_sampling_and_gentle_class_weights():
    fp = _fp([_class("a", 0.64, 50), _class("b", 0.32, 20), _class("c", 0.04, 5)])
    plan = plan_options(fp, Budget())
    assert plan.options["foreground_fraction"] == 0.5 and "'c' is 4.0%" in plan.reasons["foreground_fraction"]
    assert "class_weights" not in plan.options  # 16x: under the 20x that calls for weights
    fp = _fp([_class("a", 0.64, 50), _class("b", 0.34, 20), _class("c", 0.02, 5)])
    assert plan_options(fp, Budget()).options["class_weights"] == [pytest.approx(0.73, abs=0.01), 1.0, 4.0]  # 4.12, capped at 4
    assert "foreground_fraction" not in plan_options(_isbi_like(), Budget()).options


def test_validation_is_spaced_to_cost_a_tenth_of_the_time():
    plan = plan_options(_isbi_like(), Budget(minutes=10), lambda o: 1.0, val_pixels=100 * 512 * 512)
    # 20 images of 512^2 at 4 x 256^2 per step: 20 steps (20 s) per epoch; validation 100 x 512^2 / (4 x 256^2) / 3 = 33 s
    assert plan.estimates["steps_per_epoch"] == 20 and plan.estimates["val_seconds"] == pytest.approx(33.3, abs=0.1)
    assert plan.options["val_every"] == 17  # ceil(33.3 / (0.1 x 20))
    assert plan_options(_isbi_like(), Budget(minutes=10), lambda o: 1.0, val_pixels=0).options["val_every"] == 1


def test_touching_instances_learn_the_border_between_them():
    fp = _fp([_class("background", 0.8, 40), _class("nucleus", 0.2, 12)])
    assert "target" not in plan_options(fp, Budget()).options  # not instance masks
    fp.touching = 0.3
    plan = plan_options(fp, Budget())
    assert (plan.options["target"], plan.options["loss"]) == ("instances", "weighted-ce+dice") and "30% of the objects" in plan.reasons["target"]
    fp.touching = 0.01
    assert plan_options(fp, Budget()).options["target"] == "semantic"


def test_rgb_photographs_get_a_pretrained_encoder_only_when_its_weights_are_at_hand():
    photos = _fp([_class("road", 0.5, 100, row=0.8), _class("sky", 0.5, 40, row=0.2)], shape=(360, 480), channels=3)
    assert "encoder" not in plan_options(photos, Budget()).options  # nothing on disk: nothing is downloaded
    timed = []
    plan = plan_options(photos, Budget(minutes=10), lambda o: timed.append(o) or 0.5, available={"mobilenet_v2": "/cache/mobilenet_v2-b0353104.pth"})
    o = plan.options
    assert (o["encoder"], o["encoder_weights"], o["depth"], o["padding"], o["base_channels"], o["up_mode"]) == (
        "mobilenet_v2", "imagenet", 6, "same", 16, "bilinear")
    assert "at most 256 with an encoder" in plan.reasons["patch_size"] and "batch norm" in plan.reasons["batch_size"]
    assert timed == [{"patch_size": 256, "batch_size": 4, "depth": 6, "padding": "same", "norm": "batch", "encoder": "mobilenet_v2",
                      "up_mode": "bilinear", "base_channels": 16}]  # the encoder network is what gets timed
    assert plan.estimates["steps"] == 1080 and "1080 steps" in plan.reasons["base_channels"]
    gray = plan_options(_isbi_like(), Budget(), available={"resnet34": "/cache/resnet34-b627a593.pth"})
    assert "encoder" not in gray.options and gray.options["depth"] == 5
    given = plan_options(_isbi_like(), Budget(), fixed={"encoder": "resnet18"})
    assert (given.options["depth"], given.options["padding"]) == (6, "same") and "--encoder resnet18 implies" in given.reasons["depth"]


def test_a_short_budget_takes_fewer_patches_a_step_and_then_instance_norm():
    def step_time(o):  # seconds proportional to the batch
        return {32: 1.0, 16: 0.5}[o["base_channels"]] * o["batch_size"] / 4

    plan = plan_options(_isbi_like(), Budget(minutes=2), step_time)  # 216 steps of 4 at 16 channels (< 300)
    assert (plan.options["base_channels"], plan.options["batch_size"], plan.options["norm"]) == (16, 2, "instance")
    assert plan.estimates["steps"] == 432 and "216 steps of 4 patches" in plan.reasons["batch_size"]
    kept = plan_options(_isbi_like(), Budget(minutes=2), step_time, fixed={"batch_size": 4})
    assert (kept.options["batch_size"], kept.options["norm"]) == (4, "batch")
