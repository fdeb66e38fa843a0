"""The training configuration: one typed place that lists every option, its default and its meaning.

A run's configuration is built from the defaults, then a YAML file (``--config``), then explicit
arguments; unknown keys are rejected with a close-match suggestion, and the resolved result is written
to the run folder as ``config.yaml``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from unetkit.data.augmentation import AUGMENT_OPTIONS, AUGMENTS, Augmentation, resolve_augment
from unetkit.data.modes import MASK_MODES, SIGMA, TARGETS, W0
from unetkit.errors import UnetkitError
from unetkit.files import atomic_write
from unetkit.loss_names import FOCAL_GAMMA, LOSSES, TVERSKY_ALPHA, TVERSKY_BETA
from unetkit.models.config import ENCODER_DEPTH, ENCODERS, NORMS, PADDINGS, UP_MODES, ModelConfig
from unetkit.options import PRECISIONS, Options, check_keys, field_type, item_type, opt
from unetkit.yaml_files import read_yaml

# Model presets: "cpu" is sized for a few CPU cores (docs/benchmarks.md, cpu-speed); "paper" is Ronneberger et al. 2015.
MODEL_SIZES = {
    "cpu": {"base_channels": 32, "depth": 4, "patch_size": 128},
    "paper": {"base_channels": 64, "depth": 5, "patch_size": 388},
}
# What --encoder implies: the geometry it fixes (depth, padding) and its decoder's defaults, those of smp's Unet.
ENCODER_OPTIONS = {"depth": ENCODER_DEPTH, "padding": "same", "base_channels": 16, "norm": "batch", "up_mode": "bilinear"}
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "poly", "cosine", "plateau")
LR_SCALINGS = ("none", "linear", "sqrt")
TRACKERS = ("tensorboard", "mlflow")


@dataclass(kw_only=True)
class TrainConfig(Options):
    """Every training option. The CLI flag of ``foo_bar`` is ``--foo-bar``."""

    # data
    data: str = opt("", "training data: a folder with images/ and masks/, or a dataset.yaml")
    val: str | None = opt(None, "validation data (folder or dataset.yaml); default: the yaml's val split, else --val-fraction")
    val_fraction: float = opt(0.2, "share of the training pairs held out for validation when --val is not given")
    folds: int | None = opt(None, "cross-validation: train K runs into OUT/fold0..fold{K-1}, each validated on its own 1/K of the "
                            "training pairs (the yaml's train split; --val-fraction unused) with --time/K minutes, and write "
                            "OUT/ensemble.yaml: predict --model OUT averages them (docs/ensembles.md)", low=2, metavar="K")
    fold: int | None = opt(None, "with --folds: train only fold I (0..K-1) into --out, as --folds does for each fold", low=0, metavar="I")
    mask_mode: str = opt("auto", "how masks encode classes", MASK_MODES)
    target: str = opt("semantic", "what the network learns: semantic = the mask's classes; instances = background, interior and "
                      "the boundary where objects touch, from instance masks, so predict --instances can separate them", TARGETS)
    boundary_width: int = opt(2, "--target instances: object pixels within this many pixels of another object are boundary")
    out: str = opt("runs/exp", "run folder for checkpoints, config.yaml, metrics.csv and curves.png")
    # model (see unetkit.models.unet.ModelConfig)
    model_size: str = opt("auto", "auto = planned from the data and the budget (unetkit plan DATA shows the plan and its reasons; "
                          "options you give are kept); or a preset for base_channels, depth and patch_size: cpu = 32, 4, 128 "
                          "(learns ISBI 2012 in ~15 min on 2 cores); paper = 64, 5, 388 (the 2015 paper's network and 572-pixel tiles)",
                          ("auto", *MODEL_SIZES))
    base_channels: int | None = opt(None, "feature maps at the first level, doubled per level (default: planned with --model-size auto, else the preset's; paper: 64)", low=1)
    depth: int | None = opt(None, "levels of the U-Net, i.e. depth-1 poolings (default: planned with --model-size auto, else the preset's; paper: 5)", low=1)
    padding: str | None = opt(None, "valid: unpadded convs as in the paper; same: padded (default: valid; with --encoder: same, "
                              "which it needs)", PADDINGS)
    norm: str | None = opt(None, "normalisation after each conv (default: none; with --encoder: batch, in the decoder)", NORMS)
    sync_bn: bool = opt(False, "with --norm batch under several processes (torchrun, --nproc): batch statistics of the global batch "
                        "(synchronised batch norm) instead of each process's own patches")
    dropout: float = opt(0.0, "dropout at the end of the contracting path (paper: 0.5)", low=0)
    up_mode: str | None = opt(None, "up-sampling: 2x2 up-conv (paper) or bilinear + 1x1 conv (default: transposed; with --encoder: "
                              "bilinear, without the 1x1 conv, as segmentation_models_pytorch)", UP_MODES)
    encoder: str = opt("none", "contracting path: none = the U-Net's own; resnet18, resnet34, mobilenet_v2 = torchvision's ImageNet "
                       "classifier without its head, under a U-Net decoder, for photographs (then depth 6, i.e. sizes in multiples "
                       "of 32, padding same, base_channels 16 = decoder widths 256..16)", ENCODERS)
    encoder_weights: str | None = opt(None, "the --encoder's weights when training starts: imagenet = torchvision's ImageNet file, "
                                      "downloaded once into torch.hub's cache; or the PATH of that file (default: random)",
                                      metavar="imagenet|PATH")
    # optimisation
    epochs: int | None = opt(None, "number of epochs (default 50 unless --time is given)", low=1)
    time: float | None = opt(None, "time budget in minutes; training stops cleanly within it")
    steps_per_epoch: int | None = opt(None, "optimizer steps per epoch (default: enough patches to cover the training pixels once, at least 10)", low=1)
    batch_size: int = opt(4, "patches per optimizer step", low=1)
    patch_size: int | None = opt(None, "output size of a training patch in pixels, valid mode adds the context around it (default: planned with --model-size auto, else the preset's)", low=1)
    optimizer: str = opt("adam", "optimizer (sgd uses the paper's momentum 0.99)", OPTIMIZERS)
    lr: float | None = opt(None, "learning rate (default: 1e-3 for adam/adamw, 1e-2 for sgd)")
    lr_scaling: str = opt("none", "learning rate under W processes, whose global batch is W x batch_size: none = --lr as given; "
                          "linear = --lr x W (Goyal et al. 2017, for SGD); sqrt = --lr x sqrt(W) (often better for Adam)", LR_SCALINGS)
    momentum: float = opt(0.99, "SGD momentum (paper: 0.99)", low=0, high=1)
    weight_decay: float = opt(0.0, "weight decay (adamw: decoupled)", low=0)
    schedule: str = opt("cosine", "learning-rate schedule", SCHEDULES)
    loss: str = opt("ce+dice", "training loss, a sum of terms: weighted-ce uses the paper's border weight map; focal and tversky "
                    "favour rare and thin structures", LOSSES)
    class_weights: list[float] | None = opt(None, "weight per class of the ce and focal terms, e.g. [1, 3]")
    focal_gamma: float = opt(FOCAL_GAMMA, "focal loss: exponent of (1 - p) that fades out easy pixels (Lin et al. 2017: 2; 0 = cross-entropy)", low=0)
    tversky_alpha: float = opt(TVERSKY_ALPHA, "tversky loss: weight of false positives (Salehi et al. 2017: 0.3; 0.5 with beta 0.5 = dice)", low=0, high=1)
    tversky_beta: float = opt(TVERSKY_BETA, "tversky loss: weight of false negatives; above alpha favours recall (Salehi et al. 2017: 0.7)", low=0, high=1)
    augment: str = opt("light", "augmentation preset: none; light (flips, 90-degree rotations); paper (light + elastic deformation + gray values); strong (paper + rotation, scale, gamma, noise, blur)", AUGMENTS)
    flip_rotate: bool | None = opt(None, "random flips and 90-degree rotations (default: the preset's)")
    hflip: bool | None = opt(None, "random left-right flips only, for images with an up direction such as street scenes; "
                             "use with --flip-rotate false (default: off)")
    rotate_degrees: float | None = opt(None, "random rotation by any angle within +-this many degrees (default: the preset's; 0 = off)")
    scale_range: list[float] | None = opt(None, "random zoom factor range low,high, e.g. 0.8,1.25 (default: the preset's; 1,1 = off)")
    elastic_sigma: float | None = opt(None, "elastic deformation: std in pixels of random displacements on a coarse grid, interpolated bicubically (paper: 10; default: the preset's; 0 = off)")
    elastic_grid: int | None = opt(None, "points per side of the elastic displacement grid (paper: 3)")
    brightness: float | None = opt(None, "random brightness shift within +-this, in standard deviations of the normalised image (default: the preset's)")
    contrast: float | None = opt(None, "random contrast factor within 1 +- this, per channel about its mean (default: the preset's)")
    gamma: float | None = opt(None, "random gamma within [1/g, g] on each channel's range (default: the preset's; 1 = off)")
    noise_std: float | None = opt(None, "Gaussian noise with std up to this, in standard deviations (default: the preset's)")
    blur_sigma: float | None = opt(None, "Gaussian blur of half the patches with sigma up to this many pixels (default: the preset's)")
    foreground_fraction: float = opt(0.33, "share of patches centred on a pixel of a rare class (every class but the most frequent)")
    weight_w0: float = opt(W0, "weighted-ce: height w0 of the border term of the paper's weight map (paper: 10)")
    weight_sigma: float = opt(SIGMA, "weighted-ce: width sigma in pixels of the border term (paper: 5)")
    workers: int = opt(1, "processes that sample and augment patches beside the training step (0: in the training process)")
    cache: str | None = opt(None, "where the decoded training data is kept, read a patch at a time: a folder (default: "
                            "$UNETKIT_CACHE/data, i.e. ~/.cache/unetkit/data; one subfolder per data set, shared by later runs "
                            "and by every process on the machine), or memory = decode into each process's memory and write "
                            "nothing (docs/data-cache.md)", metavar="DIR|memory")
    # validation, runtime
    val_every: int = opt(1, "validate every N epochs (whole images, tiled like predict)", low=1)
    tile: int = opt(512, "input tile size for validation inference", low=1)
    seed: int = opt(0, "random seed: the same seed and data give the same run", low=0)
    deterministic: bool = opt(False, "use only deterministic algorithms, so a resumed run ends bit-identical to an uninterrupted one (with --epochs)")
    save_every: float = opt(10.0, "also save the full training state every N minutes within an epoch (0: only at epoch ends)", low=0)
    device: str = opt("auto", "auto (cuda if available), cpu, cuda or cuda:N")
    precision: str = opt("auto", "arithmetic: fp32, or bf16/fp16 autocast with fp32 master weights; auto = bf16 where it measurably beats fp32 here", ("auto", *PRECISIONS))
    threads: int | None = opt(None, "CPU threads for torch (default: torch's choice)", low=1)
    channels_last: bool = opt(True, "NHWC memory layout on the CPU: faster convolutions (docs/benchmarks.md); off under --deterministic")
    compile: bool = opt(False, "torch.compile the model: about a minute of compiling first, then faster steps (pays for runs of 10+ minutes)")
    progress: bool = opt(True, "show a progress bar")
    report: bool = opt(True, "at the end, evaluate best.pt on the validation set into an HTML report in RUN_DIR/report")
    # experiment tracking (unetkit.tracking)
    log: list[str] | None = opt(None, "experiment trackers, off by default: tensorboard (RUN_DIR/tensorboard), mlflow; "
                                "several comma-separated", TRACKERS)
    mlflow_uri: str | None = opt(None, "--log mlflow: tracking URI, e.g. http://host:5000 (default: a SQLite store in RUN_DIR/mlflow)")

    def __post_init__(self) -> None:
        self._encoder_defaults()
        if self.model_size in (*MODEL_SIZES, "auto"):  # auto without a plan (unetkit.engine.planned) falls back on cpu
            for name, value in MODEL_SIZES.get(self.model_size, MODEL_SIZES["cpu"]).items():  # the preset fills what was not given
                if getattr(self, name) is None:
                    setattr(self, name, value)
        self._check_lists()
        for name, what in (("lr", "a positive number such as 1e-3"), ("time", "a positive number of minutes such as 30")):
            value = getattr(self, name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not (math.isfinite(value) and value > 0):
                raise UnetkitError(f"{name} must be {what}, got {value}")
        super().__post_init__()  # choices and bounds of every field; "a,b" names as a list
        self.log = list(self.log or [])
        self._check_ranges()
        self.augmentation()  # refuses bad augmentation values

    def _encoder_defaults(self) -> None:
        """Padding, norm and up_mode that were not given; with an encoder also depth and base_channels, which it
        fixes or suggests, before the --model-size preset fills the rest."""
        if self.encoder not in ENCODERS[1:]:
            self.padding, self.norm, self.up_mode = self.padding or "valid", self.norm or "none", self.up_mode or "transposed"
            return
        for name in ("depth", "padding"):
            if getattr(self, name) not in (None, ENCODER_OPTIONS[name]):
                raise UnetkitError(f"{name}={getattr(self, name)!r} does not fit encoder={self.encoder!r}, a same-padded network of "
                                   f"stride 32 (padding same, depth {ENCODER_DEPTH}); pass --{name} {ENCODER_OPTIONS[name]} or drop --{name}")
        for name, value in ENCODER_OPTIONS.items():
            setattr(self, name, value if getattr(self, name) is None else getattr(self, name))

    def _check_lists(self) -> None:
        """List options hold a list (a string is not a list of its characters): numbers, or names (also "a,b")."""
        for f in fields(self):
            value = getattr(self, f.name)
            if field_type(type(self), f) is not list or value is None:
                continue
            numbers = item_type(type(self), f) is not str
            if isinstance(value, tuple):
                value = list(value)
                setattr(self, f.name, value)
            if numbers and not (isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
                raise UnetkitError(f"{f.name} must be a list of numbers, such as [1, 3] in YAML or 1,3 on the command line, got {value!r}")
            if not numbers and not (isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))):
                raise UnetkitError(f"{f.name} must be names, such as [a, b] in YAML or a,b on the command line, got {value!r}")

    def _check_ranges(self) -> None:
        """The checks that involve more than one option, or bounds that need their own words."""
        if not self.dropout < 1:
            raise UnetkitError(f"dropout must be below 1 (1 drops everything), got {self.dropout}")
        weights = self.class_weights
        if weights is not None and not (all(math.isfinite(w) and w >= 0 for w in weights) and any(w > 0 for w in weights)):
            raise UnetkitError(f"class_weights must be finite numbers >= 0, at least one of them > 0, got {self.class_weights}")
        if not 0.0 < self.val_fraction < 1.0:
            raise UnetkitError(f"val_fraction must be between 0 and 1, got {self.val_fraction}")
        if not 0.0 <= self.foreground_fraction <= 1.0:
            raise UnetkitError(f"foreground_fraction must be between 0 and 1, got {self.foreground_fraction}")
        if self.workers < 0:
            raise UnetkitError(f"workers must be >= 0 (0: sample in the training process), got {self.workers}")
        if self.encoder_weights is not None and self.encoder == "none":
            raise UnetkitError(f"encoder_weights={self.encoder_weights!r} needs an --encoder ({', '.join(ENCODERS[1:])}); pass one or drop --encoder-weights")
        if self.sync_bn and self.norm != "batch":
            raise UnetkitError(f"sync_bn=true synchronises batch norm, but norm={self.norm!r}; pass --norm batch or drop --sync-bn")
        if self.boundary_width < 1:
            raise UnetkitError(f"boundary_width must be >= 1 pixel, got {self.boundary_width}")
        if self.tversky_alpha + self.tversky_beta <= 0:
            raise UnetkitError("tversky_alpha and tversky_beta are both 0, which makes the tversky loss constant; give one of them a value > 0")
        if self.weight_w0 < 0 or self.weight_sigma <= 0:
            raise UnetkitError(f"weight_w0 must be >= 0 and weight_sigma > 0, got {self.weight_w0} and {self.weight_sigma}")

    @property
    def resolved_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return 1e-2 if self.optimizer == "sgd" else 1e-3

    @property
    def resolved_epochs(self) -> int | None:
        """Epoch limit: the given one, else 50 without a time budget, else none (time decides)."""
        if self.epochs is not None:
            return self.epochs
        return None if self.time is not None else 50

    def augmentation(self) -> Augmentation:
        """The ``augment`` preset with the augmentation options that were given."""
        return resolve_augment(self.augment, **{k: getattr(self, k) for k in AUGMENT_OPTIONS})

    def model_config(self, in_channels: int, num_classes: int) -> ModelConfig:
        """The network these options describe, for data of ``in_channels`` and ``num_classes``."""
        model_fields = ("base_channels", "depth", "padding", "norm", "dropout", "up_mode", "encoder")
        return ModelConfig(in_channels=in_channels, num_classes=num_classes, **{k: getattr(self, k) for k in model_fields})


def load_config_file(path: str | Path) -> dict:
    """Read a YAML config file into a dict of known options; numbers that YAML 1.1 reads as text (``1e-3``) become numbers."""
    path = Path(path)
    if path.is_dir():
        raise UnetkitError(f"{path}: a folder, not a config file; pass a YAML file such as a run's config.yaml")
    try:
        data = read_yaml(path)
    except FileNotFoundError:
        raise UnetkitError(f"{path}: config file not found") from None
    except OSError as e:
        raise UnetkitError(f"{path}: cannot read the config file ({e.strerror or type(e).__name__})") from None
    except yaml.YAMLError as e:
        raise UnetkitError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise UnetkitError(f"{path}: expected a mapping of option: value, got {type(data).__name__}")
    check_keys(TrainConfig, [str(k) for k in data], str(path))
    return {k: _number(TrainConfig, k, v) for k, v in data.items()}


def _number(cls: type, name: str, value):
    """``value`` of option ``name`` with numbers written as text (YAML 1.1 reads ``1e-3`` as a string) parsed;
    anything else unchanged, for the option's own type check to name."""
    f = next(f for f in fields(cls) if f.name == name)
    kind = item_type(cls, f) if field_type(cls, f) is list else field_type(cls, f)
    if kind not in (int, float):
        return value
    if isinstance(value, list):
        return [_parse(v, kind) for v in value]
    return _parse(value, kind)


def _parse(value, kind: type):
    if not isinstance(value, str):
        return value
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if kind is int and number.is_integer() else number


def _layers(config_file: str | Path | None, overrides: dict) -> tuple[dict, dict]:
    """The options set by ``config_file``, and those set by ``overrides`` (None values in overrides are not set)."""
    from_file = load_config_file(config_file) if config_file is not None else {}
    check_keys(TrainConfig, overrides, "argument")
    return from_file, {k: v for k, v in overrides.items() if v is not None}


def given_options(config_file: str | Path | None = None, **overrides) -> dict:
    """The options that ``config_file`` and then ``overrides`` set: what a plan must keep."""
    from_file, given = _layers(config_file, overrides)
    return {**from_file, **given}


def make_config(config_file: str | Path | None = None, planned: dict | None = None, **overrides) -> TrainConfig:
    """Defaults, then ``planned`` (a plan's options, :mod:`unetkit.planning`), then ``config_file``, then
    ``overrides`` (None values in overrides are ignored).

    An error about an option that came from ``config_file`` starts with the file's name.
    """
    from_file, given = _layers(config_file, overrides)
    try:
        return TrainConfig(**{**(planned or {}), **from_file, **given})
    except TypeError as e:
        raise UnetkitError(f"bad configuration: {e}") from None
    except UnetkitError as e:
        name = re.match(r"\w*", str(e)).group()
        if name in from_file and name not in given:
            raise UnetkitError(f"{config_file}: {e}") from None
        raise


def dump_config(config: TrainConfig, path: str | Path, notes: dict | None = None) -> None:
    """Write the resolved configuration as YAML (atomically); ``notes`` (values resolved at run time, such as
    the global batch) follow as comments, so the file still loads with ``--config``."""
    text = yaml.safe_dump(config.to_dict(), sort_keys=False)
    if notes:
        text += "# resolved at run time, not options:\n" + "".join(f"# {line}" for line in yaml.safe_dump(notes, sort_keys=False).splitlines(True))
    with atomic_write(path) as tmp:
        Path(tmp).write_text(text)


