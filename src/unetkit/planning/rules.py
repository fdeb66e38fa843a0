"""The planner's rules: a training set's fingerprint and a budget -> training options, each with its reason.

Pure functions of numbers: the speed of the machine comes in as a function (:mod:`unetkit.planning.speed`
measures it), so every rule can be tested with exact inputs. nnU-Net's experiment planning is the model: the
patch from the data, the depth from the patch, the batch from what fits. It plans for a GPU and a fixed number of
steps; these rules plan for the minutes the user gives, on the machine they run on.

The choices, in order:

- **field of view** (``patch_size``): a patch holds the widest common structure with room on both sides
  (:data:`WIDTHS_PER_PATCH` times its width), at least :data:`MIN_PATCH` pixels, at most the images' shorter side
  and :data:`MAX_PATCH`;
- **batch**: about as many pixels per step as 4 patches of 256 (MONAI's and nnU-Net's 2D regime), 2 to 16 patches;
- **encoder**: for 8-bit RGB images, an ImageNet-pretrained encoder when its weights are already on disk (never
  downloaded by the plan); it fixes the network's shape (smp's Unet decoder);
- **depth**: poolings until the bottom is about :data:`BOTTOM` pixels across, 3 to 5 levels;
- **padding and normalisation**: same padding, since valid mode spends most of a step of these patch sizes on
  context (the paper's exact tiling stays one flag away); batch norm, or instance norm under 4 patches a step;
- **width** (``base_channels``): 32 unless the budget buys too few steps at that width (then 16);
- **augmentation**: flips and right angles, or left-right flips only when a large class sits high or low in
  the images (sky, road: an up direction);
- **sampling and loss**: cross-entropy + Dice; patches centred on rare classes more often, and square-root
  median-frequency class weights when classes are strongly imbalanced;
- **target**: with instance masks whose objects touch, the touching-border target and the paper's weighted loss;
- **validation**: often enough to keep the best model, rarely enough to cost at most a tenth of the budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from unetkit.config import ENCODER_OPTIONS
from unetkit.models.config import context
from unetkit.planning.fingerprint import ClassStats, Fingerprint

MIN_PATCH = 256  # pixels, where the images are that large: MONAI's and nnU-Net's 2D regime; smaller patches see too little
MAX_PATCH = 512
WIDTHS_PER_PATCH = 4  # a patch spans this many widths of the widest common structure
COMMON = 0.01  # classes below this share of the pixels do not set the field of view
BOTTOM = 8  # pixels across the deepest level, as nnU-Net's 4 (3D) to 8 (2D)
BATCH_PIXELS = 4 * 256 * 256  # pixels per step: 4 patches of 256
MIN_STEPS = 300  # steps a budget should buy at the chosen width before a narrower network is chosen
UP_SHARE, UP_ROW = 0.05, 0.2  # a class with this share of the pixels, this far from mid-height, means "up"
RARE, IMBALANCE = 0.05, 20.0
MAX_WEIGHT = 4.0  # a class weight beyond this makes a handful of pixels steer every step
TOUCHING = 0.05  # with instance masks, this share of objects touching another calls for the touching-border target
VAL_SHARE = 0.1  # validation may take this much of the budget

#: Seconds of one optimizer step of the network ``options`` describe (``base_channels``, ``depth``,
#: ``patch_size``, ``batch_size``, ``padding``, ``norm``), measured on this machine.
StepTime = Callable[[dict], float]


@dataclass
class Budget:
    """What the run may spend: ``minutes`` of training (``--time``), or ``epochs``; neither = the default epochs."""

    minutes: float | None = None
    epochs: int | None = None

    def __str__(self) -> str:
        if self.minutes is not None:
            return f"{self.minutes:g} minutes"
        return f"{self.epochs} epochs" if self.epochs else "the default epochs"


@dataclass
class Plan:
    """Planned options (TrainConfig field -> value) with a reason for each, and the numbers behind them.

    Options in ``fixed`` (the ones the user gave) are kept as given, and later rules build on them: a given
    ``patch_size`` gets the batch and depth planned for it. ``planned`` keeps what the plan would have chosen.
    """

    fixed: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    reasons: dict = field(default_factory=dict)
    estimates: dict = field(default_factory=dict)
    planned: dict = field(default_factory=dict)

    def choose(self, name: str, value, reason: str) -> None:
        self.planned[name] = value
        if name in self.fixed:
            self.options[name] = self.fixed[name]
            self.reasons[name] = f"given (the plan: {value}, {reason})"
        else:
            self.options[name] = value
            self.reasons[name] = reason


def _round(size: float, multiple: int = 32) -> int:
    return int(multiple * round(size / multiple))


def common_classes(fp: Fingerprint) -> list[ClassStats]:
    """The classes that cover at least :data:`COMMON` of the labelled pixels."""
    return [c for c in fp.classes if c.fraction >= COMMON]


def plan_patch(fp: Fingerprint, plan: Plan) -> None:
    widest = max(common_classes(fp), key=lambda c: c.width, default=None)
    side = min(fp.median_shape)
    need = WIDTHS_PER_PATCH * (widest.width if widest else 0.0)
    patch = min(max(MIN_PATCH, _round(need)), max(32, _round(min(side, MAX_PATCH))))
    why = (f"{WIDTHS_PER_PATCH} x the width of '{widest.name}' ({widest.width:.0f} px), the widest common structure"
           if widest else "no labelled structure measured")
    bounds = f"at least {MIN_PATCH}, at most the image side ({side}) and {MAX_PATCH}"
    plan.choose("patch_size", patch, f"{why}, {bounds}")


def plan_batch(patch: int, plan: Plan) -> None:
    batch = int(min(16, max(2, round(BATCH_PIXELS / patch**2))))
    plan.choose("batch_size", batch, f"about {BATCH_PIXELS // 1024}k pixels per step (4 patches of 256) at {patch}-px patches")


#: Encoders in the order the planner prefers them when their ImageNet weights are at hand.
ENCODER_PREFERENCE = ("resnet34", "resnet18", "mobilenet_v2")
ENCODER_BATCH = 4  # patches a step, at least, for an encoder's batch norm


def plan_encoder(fp: Fingerprint, available: dict, plan: Plan) -> bool:
    """An ImageNet-pretrained encoder for 8-bit RGB images when its weights need no download; True if the network
    is an encoder's (chosen here or given), whose shape the encoder then fixes."""
    name = next((n for n in ENCODER_PREFERENCE if n in available), None)
    if fp.channels == 3 and fp.dtype == "uint8" and name is not None:
        plan.choose("encoder", name, f"8-bit RGB images, and torchvision's ImageNet weights for {name} are at hand ({available[name]})")
        plan.choose("encoder_weights", "imagenet", "pretrained features learn photographs in a fraction of the steps")
    if plan.options.get("encoder", plan.fixed.get("encoder", "none")) == "none":
        return False
    for option, value in ENCODER_OPTIONS.items():
        plan.choose(option, value, f"what --encoder {plan.options.get('encoder', plan.fixed.get('encoder'))} implies (smp's Unet decoder)")
    if plan.options["batch_size"] < ENCODER_BATCH:  # the encoder's batch norm: too few patches a step spoil its pretrained statistics
        patch = min(plan.options["patch_size"], MIN_PATCH)
        plan.choose("patch_size", patch, f"at most {MIN_PATCH} with an encoder, so that {ENCODER_BATCH} patches fit a step")
        plan.choose("batch_size", ENCODER_BATCH, f"the encoder's batch norm needs at least {ENCODER_BATCH} patches a step")
    return True


def plan_network(plan: Plan) -> None:
    """Same padding with normalisation: in valid mode most of each step would go to context at these patch sizes."""
    patch, depth, batch = plan.options["patch_size"], plan.options["depth"], plan.options["batch_size"]
    ctx = context(depth, "valid")
    wasted = 1 - (patch / (patch + ctx)) ** 2
    plan.choose("padding", "same", f"valid mode would spend {wasted:.0%} of each step on the {ctx}-px context of a {patch}-px patch; "
                                   "same padding learns from every pixel (--padding valid for exact tiles)")
    norm, why = ("batch", f"{batch} patches per step") if batch >= 4 else ("instance", f"only {batch} patches per step, too few for batch statistics")
    plan.choose("norm", norm, f"normalised layers train faster at a fixed learning rate; {why}")


def plan_depth(patch: int, plan: Plan) -> None:
    poolings = max(2, min(4, int(math.log2(patch / BOTTOM))))
    depth = poolings + 1
    plan.choose("depth", depth, f"{poolings} poolings bring a {patch}-px patch to about {patch // 2**poolings} px at the bottom (3..5 levels)")


def plan_width(budget: Budget, step_time: StepTime | None, options: dict, plan: Plan) -> None:
    """32 base channels, or 16 when the budget buys fewer than :data:`MIN_STEPS` steps at 32."""
    if budget.minutes is None or step_time is None:
        plan.choose("base_channels", 32, "no time budget to size it by: the width that learns ISBI 2012 in minutes on 2 cores")
        return
    width = plan.fixed.get("base_channels", 32)
    seconds = _estimate(budget, step_time, {**options, "base_channels": width}, plan)
    steps = plan.estimates["steps"]
    if steps >= MIN_STEPS or width != 32:
        plan.choose("base_channels", 32, f"{seconds:.2f} s per step here: {budget} buy about {steps} steps at {width}")
        return
    narrow = _estimate(budget, step_time, {**options, "base_channels": 16}, plan)
    plan.choose("base_channels", 16, f"{seconds:.2f} s per step at 32 would buy only {steps} steps in {budget} (< {MIN_STEPS}); "
                                     f"16 takes {narrow:.2f} s")
    if plan.estimates["steps"] < MIN_STEPS and "batch_size" not in plan.fixed:
        plan_smaller_batch(budget, step_time, {**options, "base_channels": 16}, plan)


def plan_smaller_batch(budget: Budget, step_time: StepTime, options: dict, plan: Plan) -> None:
    """Fewer patches per step (at least 2) when even the narrow network buys too few steps: steps count more than batch."""
    batch, steps = options["batch_size"], plan.estimates["steps"]
    smaller = max(2, int(batch * steps / MIN_STEPS))
    if smaller >= batch:
        return
    seconds = _estimate(budget, step_time, {**options, "batch_size": smaller}, plan)
    plan.choose("batch_size", smaller, f"{budget} buy only {steps} steps of {batch} patches even at 16 channels (< {MIN_STEPS}): "
                                       f"{smaller} patches a step ({seconds:.2f} s) buy {plan.estimates['steps']}")
    if plan.options.get("encoder", "none") == "none":
        plan_network(plan)  # the normalisation follows the batch


def _estimate(budget: Budget, step_time: StepTime, options: dict, plan: Plan) -> float:
    """Seconds per step of ``options``, recorded in the plan's estimates with the steps the budget buys."""
    seconds = step_time(options)
    plan.estimates.update(step_seconds=round(seconds, 3), steps=int(budget.minutes * 60 * (1 - VAL_SHARE) / seconds))
    return seconds


def up_direction(fp: Fingerprint) -> ClassStats | None:
    """A large class that sits high or low in the images (sky, road), if any."""
    found = [c for c in fp.classes if c.fraction >= UP_SHARE and c.images >= 2 and abs(c.row - 0.5) >= 0.5 - UP_ROW]
    return max(found, key=lambda c: abs(c.row - 0.5), default=None)


def plan_augmentation(fp: Fingerprint, plan: Plan) -> None:
    sided = up_direction(fp)
    if sided is None:
        plan.choose("augment", "light", "no class keeps to the top or bottom of the images: flips and right angles are free")
        return
    where = "top" if sided.row < 0.5 else "bottom"
    why = f"'{sided.name}' keeps to the {where} of the images (mean height {sided.row:.2f}): they have an up direction"
    plan.choose("augment", "none", f"{why}; no vertical flips or right angles")
    plan.choose("hflip", True, f"{why}; left-right flips keep it")


def plan_sampling(fp: Fingerprint, plan: Plan) -> None:
    present = [c for c in fp.classes if c.fraction > 0]
    rarest = min(present, key=lambda c: c.fraction, default=None)
    plan.choose("loss", "ce+dice", "cross-entropy for calibrated pixels, Dice so that small classes count as much as large ones")
    if rarest is not None and rarest.fraction < RARE:
        plan.choose("foreground_fraction", 0.5, f"'{rarest.name}' is {rarest.fraction:.1%} of the pixels: half the patches centre on a rare class")
    if len(present) > 2 and present and max(c.fraction for c in present) / rarest.fraction >= IMBALANCE:
        median = sorted(c.fraction for c in present)[len(present) // 2]
        weights = [round(min(MAX_WEIGHT, math.sqrt(median / c.fraction)), 2) if c.fraction > 0 else 0.0 for c in fp.classes]
        plan.choose("class_weights", weights, f"class shares span {max(c.fraction for c in present) / rarest.fraction:.0f}x: square-root "
                                              f"median-frequency weights (Eigen & Fergus 2015), at most {MAX_WEIGHT:g}, gentle beside the Dice term")


def plan_target(fp: Fingerprint, plan: Plan) -> None:
    """Instance masks whose objects touch: learn the border between them (``target: instances``, the paper's weights)."""
    if fp.touching is None:
        return
    if fp.touching < TOUCHING:
        plan.choose("target", "semantic", f"only {fp.touching:.0%} of the objects touch another: their connected components separate them")
        return
    plan.choose("target", "instances", f"{fp.touching:.0%} of the objects touch another: learn the border between them, so predict "
                                       "--instances can cut them apart")
    plan.choose("loss", "weighted-ce+dice", "touching objects: the paper's border weight map makes the thin gaps between them count")


def plan_validation(fp: Fingerprint, val_pixels: int, budget: Budget, step_time: StepTime | None, plan: Plan) -> None:
    """Validate every epoch unless that would cost more than :data:`VAL_SHARE` of the training time."""
    seconds, steps_per_epoch = plan.estimates.get("step_seconds"), plan.estimates.get("steps_per_epoch")
    if budget.minutes is None or seconds is None or not steps_per_epoch or not val_pixels:
        plan.choose("val_every", 1, "every epoch")
        return
    batch_pixels = plan.options["batch_size"] * plan.options["patch_size"] ** 2
    val_seconds = val_pixels / batch_pixels * seconds / 3  # a forward pass is about a third of a training step
    every = max(1, math.ceil(val_seconds / (VAL_SHARE * steps_per_epoch * seconds)))
    plan.estimates["val_seconds"] = round(val_seconds, 1)
    plan.choose("val_every", every, f"a validation pass takes about {val_seconds:.0f} s against {steps_per_epoch * seconds:.0f} s per epoch: "
                                    f"every {every} epoch(s) keeps it under {VAL_SHARE:.0%} of the time")


def plan_options(fp: Fingerprint, budget: Budget, step_time: StepTime | None = None, val_pixels: int = 0, fixed: dict | None = None,
                 available: dict | None = None) -> Plan:
    """The planned training options for the data ``fp`` describes and the ``budget``.

    Args:
        available: Encoders whose ImageNet weights are at hand (name -> file); the plan may choose one for RGB images.
        fixed: Options the user gave (name -> value): kept, and the other choices are planned around them.
        step_time: Seconds per optimizer step of a candidate network on this machine; None plans without it.
        val_pixels: Pixels of the validation images (sizes the validation interval).
    """
    plan = Plan(fixed=dict(fixed or {}))
    plan_patch(fp, plan)
    patch = plan.options["patch_size"]
    plan_batch(patch, plan)
    encoder = plan_encoder(fp, available or {}, plan)
    if not encoder:
        plan_depth(patch, plan)
        plan_network(plan)
    shape = ("patch_size", "batch_size", "depth", "padding", "norm", "encoder", "up_mode")
    candidate = {k: plan.options.get(k, plan.fixed.get(k)) for k in shape if k in plan.options or k in plan.fixed}
    if encoder and budget.minutes is not None and step_time is not None:
        seconds = _estimate(budget, step_time, {**candidate, "base_channels": plan.options["base_channels"]}, plan)
        plan.reasons["base_channels"] += f"; {seconds:.2f} s per step here: {budget} buy about {plan.estimates['steps']} steps"
    elif not encoder:
        plan_width(budget, step_time, candidate, plan)
    train_pixels = fp.pairs * fp.median_shape[0] * fp.median_shape[1]
    plan.estimates["steps_per_epoch"] = max(10, math.ceil(train_pixels / (plan.options["batch_size"] * patch**2)))
    plan_augmentation(fp, plan)
    plan_sampling(fp, plan)
    plan_target(fp, plan)
    plan_validation(fp, val_pixels, budget, step_time, plan)
    return plan
