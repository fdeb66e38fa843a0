"""What each public function takes: its typed options, with every default and its meaning stated once.

``unetkit.predict(...)`` and ``unetkit predict ...`` are the same function: the API builds one of these
objects from its keyword arguments (unknown names are refused with a suggestion, values are checked),
and the CLI generates its flags and help from the same fields (:mod:`unetkit.cli`). Shared groups are
mixed in: :class:`~unetkit.inference.options.InferenceOptions` for every command that runs a model,
:class:`~unetkit.inference.options.InstanceOptions` for those that make objects. Training options are
:class:`~unetkit.config.TrainConfig`.

No torch and no numpy here: declarations only, so ``unetkit COMMAND --help`` answers at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from unetkit.data.modes import MASK_MODES, SIGMA, W0
from unetkit.inference.options import DEFAULT_TILE, NODATA_CLASS, InferenceOptions, InstanceOptions
from unetkit.errors import UnetkitError
from unetkit.options import Options, opt

STREAM_MODES = ("auto", "always", "never")
EXPORT_FORMATS = ("onnx", "torchscript")
PRUNERS = ("median", "halving", "none")
METRIC_GROUPS = ("pixel", "boundary", "isbi", "instances")
RUN_SETTINGS = ("model_size", "base_channels", "depth", "patch_size", "loss", "optimizer", "lr", "augment")
RUN_COLUMNS = ("run", "status", "data", *RUN_SETTINGS, "epochs", "minutes", "dice", "iou")

_PROGRESS = "show progress bars"
_OVERWRITE = "replace files that already exist where the outputs go, and write beside inputs (an input itself is never replaced)"


@dataclass(kw_only=True)
class TrainRun(Options):
    """How a training run starts, besides its options (:class:`~unetkit.config.TrainConfig`)."""

    config: str | None = opt(None, "YAML file of options (same names as the flags, with underscores); flags override it")
    resume: str | None = opt(None, "continue an interrupted run from RUN_DIR/last.pt (flags may change the budget or --lr)", metavar="RUN_DIR")
    force: bool = opt(False, "with --resume: continue even a run that stopped on a NaN loss")
    nproc: int | None = opt(None, "train in N processes on this machine under torchrun (DistributedDataParallel; global batch "
                            "N x --batch-size); for several machines run torchrun yourself (README: Several processes and machines)",
                            low=1, metavar="N")
    max_restarts: int = opt(0, "with --nproc: restart all workers up to K times after a failure, resuming from last.pt", low=0, metavar="K")
    overwrite: bool = opt(False, "start a new run in an --out folder that holds one, replacing its checkpoints and metrics "
                          "(without it such a folder is refused; --resume continues it)")


@dataclass(kw_only=True)
class PlanOptions(Options):
    """``unetkit.plan``: the training plan for a data set and a budget, without training."""

    data: str = opt(help="training data: a folder with images/ and masks/, or a dataset.yaml", positional=True, metavar="DATA")
    config: str | None = opt(None, "YAML file of training options: the plan keeps what it sets, as train would")


@dataclass(kw_only=True)
class PredictOptions(InferenceOptions, InstanceOptions):
    """``unetkit.predict``: segment images of any size with overlap-tile inference."""

    model: str = opt(help="checkpoint (a run's best.pt or last.pt) or an exported .onnx model; several comma-separated, or a folder "
                     "written by train --folds (or its ensemble.yaml), to average their class probabilities (an ensemble)")
    inputs: list[str] = opt(help="image files, zarr stores or folders (searched recursively)", positional=True, metavar="INPUT")
    out: str = opt(help="output folder: NAME.png class-index masks (NAME.tif for streamed images); or, for one input, "
                   "a .tif/.tiff/.zarr file to stream the mask into")
    probabilities: bool = opt(False, "also write NAME_prob.tif: float32 (C, H, W) probabilities")
    overlay: bool = opt(False, "also write NAME_overlay.png: class colours over the image")
    uncertainty: bool = opt(False, "also write NAME_uncertainty.tif: float32 (H, W) entropy of the class probabilities "
                            "divided by log(classes), 0 = certain, 1 = all classes equally likely (averaged over --tta's passes with it)")
    progress: bool = opt(True, _PROGRESS)
    stream: str = opt("auto", "read and write tile by tile (images bigger than memory, docs/large-images.md); auto = zarr stores, "
                      "GeoTIFFs, images over 64 MP, and --out FILE", STREAM_MODES)
    pyramid: bool = opt(False, "streamed masks: add half-resolution levels (TIFF SubIFDs, GeoTIFF overviews, zarr levels)")
    nodata_class: int = opt(NODATA_CLASS, "GeoTIFF input: class written where all bands are nodata; those tiles are skipped", low=0, high=65535)
    dask: str | None = opt(None, "run the tiles of streamed images on this Dask scheduler (e.g. tcp://host:8786)", metavar="ADDRESS")
    dask_workers: int = opt(0, "run the tiles of streamed images on a local Dask cluster of N worker processes instead", low=0, metavar="N")
    overwrite: bool = opt(False, _OVERWRITE)


@dataclass(kw_only=True)
class EvaluateOptions(InferenceOptions, InstanceOptions):
    """``unetkit.evaluate``: score a model on labelled data (model + data), or saved predictions (pred + truth)."""

    model: str | None = opt(None, "checkpoint or exported .onnx model to evaluate on --data; several comma-separated, or a train --folds "
                            "folder, to evaluate the ensemble that averages their probabilities")
    data: str | None = opt(None, "labelled data set (folder or dataset.yaml)")
    split: str | None = opt(None, "a split of the dataset.yaml (e.g. val); default: all pairs")
    pred: str | None = opt(None, "folder of predicted masks, NAME.png or NAME.tif per truth mask (class indices, or 0/1 or 0/255 "
                           "for binary truth)")
    truth: str | None = opt(None, "the ground-truth masks: a folder of masks, or a data set (folder, its masks/ or dataset.yaml)")
    json_path: str | None = opt(None, "write all scores to this JSON file", metavar="FILE")
    report_dir: str | None = opt(None, "write an HTML report (index.html and its PNGs) into this folder", metavar="DIR")
    run: str | None = opt(None, "run folder whose training curves go into the report (default: the model's folder)")
    metrics: list[str] | None = opt(None, "metric families, comma-separated (default: pixel,boundary, plus isbi for binary data; "
                                    "pixel is always included)", metavar=",".join(METRIC_GROUPS))
    tolerance: float = opt(2.0, "boundary F1 tolerance in pixels", low=0)
    progress: bool = opt(True, _PROGRESS)
    overwrite: bool = opt(False, "replace an existing --json-path file or --report-dir contents (never an input)")


@dataclass(kw_only=True)
class CheckOptions(Options):
    """``unetkit.check``: diagnose a data set and list every problem with its fix."""

    data: str = opt(help="data set folder (images/ and masks/) or dataset.yaml", positional=True)
    mask_mode: str = opt("auto", "force a mask encoding", MASK_MODES)
    preview: str | None = opt("unetkit-check.png", "preview grid PNG of images with masks overlaid (--no-preview: none)", metavar="PNG",
                               negatable=True)
    preview_count: int = opt(12, "pairs drawn in the preview", low=1)
    weights: str | None = opt(None, "write the paper's border weight map of every pair into this folder", metavar="DIR")
    weight_w0: float = opt(W0, "border term height w0", low=0)
    weight_sigma: float = opt(SIGMA, "border term width sigma in pixels", above=0)
    cache: str | None = opt(None, "the decoded cache that train --cache DIR fills, whose size and place the report gives (default: "
                            "train's default, $UNETKIT_CACHE/data)", metavar="DIR")
    progress: bool = opt(True, _PROGRESS)
    overwrite: bool = opt(False, _OVERWRITE)


@dataclass(kw_only=True)
class ExportOptions(Options):
    """``unetkit.export``: a model file that carries its normalisation, classes, colours and geometry."""

    model: str = opt(help="checkpoint: a run's best.pt or last.pt")
    out: str = opt(help="file to write: model.onnx (or e.g. model.torchscript)")
    format: str = opt("onnx", "file format", EXPORT_FORMATS)
    tile: int = opt(DEFAULT_TILE, "recommended input tile size stored in the file", low=1)
    overwrite: bool = opt(False, "replace --out if it exists")


@dataclass(kw_only=True)
class Limits(Options):
    """What one server accepts and how much it computes at once: uploads beyond them get 413, requests beyond
    ``jobs + max_queue`` get 503 at once instead of being buffered without bound."""

    max_upload_mb: float = opt(32.0, "largest upload in MB (2**20 bytes); larger ones get 413")
    max_pixels: int = opt(4096 * 4096, "largest image, height x width, checked before its pixels are decoded; larger ones get 413")
    jobs: int = opt(1, "images segmented at the same time; each holds its image and logits")
    max_queue: int = opt(32, "requests that may wait for a job slot; more get 503")
    body_timeout: float = opt(30.0, "seconds a request's body may take to arrive after its headers; slower uploads get 408",
                              above=0, metavar="SECONDS")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.max_upload_mb > 0:
            raise UnetkitError(f"--max-upload-mb must be > 0, got {self.max_upload_mb}")
        for name, low in (("max_pixels", 1), ("jobs", 1), ("max_queue", 0)):
            if getattr(self, name) < low:
                raise UnetkitError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(self, name)}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


@dataclass(kw_only=True)
class ServeOptions(InferenceOptions, Limits):
    """``unetkit.serve``: an HTTP server (POST /predict, GET /health, a web page at /) until interrupted."""

    model: str = opt(help="checkpoint (best.pt) or exported .onnx model")
    host: str = opt("127.0.0.1", "interface to listen on; 0.0.0.0 exposes the server to the network")
    port: int = opt(8000, "TCP port", low=0, high=65535)


@dataclass(kw_only=True)
class DemoOptions(Options):
    """``unetkit.demo``: train on generated data, predict, evaluate and write a report (a few minutes)."""

    out: str = opt("unetkit-demo", "output folder; the demo owns it and replaces what an earlier demo left there")
    epochs: int = opt(12, "training epochs", low=1)
    seed: int = opt(0, "random seed", low=0)
    progress: bool = opt(True, _PROGRESS)


@dataclass(kw_only=True)
class RecipeOptions(Options):
    """``unetkit.recipe``: train a recipe folder's config on its data set, score its validation split, draw a figure."""

    recipe: str = opt(help="recipe folder holding dataset.yaml and config.yaml, e.g. examples/isbi2012", positional=True)
    data: str | None = opt(None, "the data set folder (with the same images/ and masks/ folders) when it is not in ../shared/data/")
    out: str | None = opt(None, "output folder (default: runs/RECIPE_NAME)")
    time: float | None = opt(None, "training minutes instead of the recipe's", low=0)
    figure_path: str | None = opt(None, "also write the figure here (e.g. docs/gallery/NAME.png)", metavar="PNG")
    figure_images: int = opt(3, "validation images in the figure", low=1)
    progress: bool = opt(True, _PROGRESS)
    overwrite: bool = opt(False, "start over in an --out that holds an earlier run of the recipe, and replace --figure-path")
    command: str | None = opt(None, "the command line that ran this, recorded in results.json", cli=False)


@dataclass(kw_only=True)
class TuneOptions(Options):
    """``unetkit.tune``: search training hyperparameters with Optuna within a time budget (resumable)."""

    data: str = opt(help="training data, a folder or dataset.yaml (validation as for train)")
    trials: int = opt(20, "trials in all, those already in OUT/study.db included", low=1)
    time: float = opt(60.0, "minutes for this search, shared equally by the trials it runs", low=0)
    space: str | None = opt(None, "YAML search space replacing the default (format: docs/tuning.md)")
    out: str = opt("runs/tune", "study folder: study.db, trial_NNN/, best.yaml, best.pt, plots")
    pruner: str = opt("median", "stop trials whose validation Dice falls behind: median of earlier trials, successive halving, or none", PRUNERS)
    config: str | None = opt(None, "YAML file of training options fixed for every trial")
    verbose: bool = opt(True, "print one line per trial")


@dataclass(kw_only=True)
class RunsOptions(Options):
    """``unetkit.runs``: the run folders under a folder, with their settings and best validation scores."""

    dir: str = opt("runs", "folder to search recursively", positional=True)
    sort: str = opt("dice", f"column to sort by, numbers highest first: {', '.join(RUN_COLUMNS)}", metavar="KEY")
    reverse: bool = opt(False, "the opposite order")
