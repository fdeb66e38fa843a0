"""What a run records beyond its run folder, as training callbacks: the end-of-run validation report, and
experiment tracking with TensorBoard and MLflow (off by default, ``--log``).

:func:`run_callbacks` gives the callbacks ``unetkit.train`` trains with: :class:`ValidationReport` (unless
``report=false``), the caller's, and the loggers that ``--log tensorboard,mlflow`` (or ``log: [tensorboard,
mlflow]`` in a config file) names. Both tracking libraries are optional extras, imported when a run asks
for them. Each logger may also be passed to ``unetkit.train(callbacks=[...])`` directly.

- :class:`ValidationReport` evaluates ``best.pt`` on the validation set into ``RUN_DIR/report`` when the
  run finished (:func:`unetkit.evaluation.validation_report`).
- :class:`TensorBoardLogger` writes ``RUN_DIR/tensorboard``: every number of the epoch's metrics row as a
  scalar (``train/loss``, ``train/lr``, ``val/dice``, ``val/dice_CLASS``, ...) at step = epoch, and a few
  validation images as input | truth | prediction panels (``samples/N``).
- :class:`MLflowLogger` records one MLflow run per ``train`` call: the configuration as params, the
  metrics row per epoch (the column names of metrics.csv, step = epoch), and at the end metrics.csv,
  curves.png and config.yaml as artifacts and the path of best.pt as the tag ``unetkit.best_checkpoint``.
  Without ``mlflow_uri`` the store is SQLite in ``RUN_DIR/mlflow`` (see it with
  ``mlflow ui --backend-store-uri sqlite:///RUN_DIR/mlflow/mlflow.db``).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from unetkit.engine.callbacks import Callback, TrainView
from unetkit.engine.run_folder import RunFolder
from unetkit.errors import TrainingInterrupted, UnetkitError
from unetkit.extras import optional
from unetkit.evaluation import validation_report
from unetkit.inference.options import InferenceOptions
from unetkit.inference.predictor import normalize, tiled_logits
from unetkit.report import colorize, to_display

SAMPLE_IMAGES = 3  # validation images drawn into TensorBoard each epoch
SAMPLE_SIZE = 256  # their centre crop, rows and columns at most


def summary_writer_class():
    """torch's TensorBoard SummaryWriter, or fail with the install hint."""
    try:
        import tensorboard  # noqa: F401 - torch.utils.tensorboard needs it installed
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UnetkitError("--log tensorboard needs tensorboard: pip install 'unetkit[tensorboard]'") from None
    return SummaryWriter


def mlflow_module():
    """Import mlflow, or fail with the install hint."""
    mlflow = optional("mlflow", "--log mlflow needs MLflow", "mlflow")
    for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):  # "Creating initial MLflow database tables..."
        logging.getLogger(name).setLevel(logging.WARNING)
    return mlflow


def numeric(row: dict) -> dict[str, float]:
    """The numbers of a metrics row but its epoch and step (empty cells, e.g. epochs without validation, left out)."""
    return {k: float(v) for k, v in row.items() if k not in ("epoch", "step") and isinstance(v, (int, float)) and not isinstance(v, bool)}


def scalar_tags(row: dict) -> dict[str, float]:
    """TensorBoard tags of a metrics row: ``train_loss`` -> ``train/loss``, ``val_dice`` -> ``val/dice``, ``lr`` -> ``train/lr``."""
    tags = {}
    for key, value in numeric(row).items():
        group, _, name = key.partition("_")
        tags[f"{group}/{name}" if group in ("train", "val") and name else f"train/{key}"] = value
    return tags


def centre_crop(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The central ``size`` x ``size`` (at most) window of an (H, W, C) image and its (H, W) mask."""
    h, w = mask.shape
    r, c = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return image[r : r + size, c : c + size], mask[r : r + size, c : c + size]


def sample_panel(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, colors: list) -> np.ndarray:
    """Input | truth | prediction side by side, separated by white 2-pixel bars: (H, 3 W + 4, 3) uint8."""
    bar = np.full((truth.shape[0], 2, 3), 255, np.uint8)
    return np.concatenate([to_display(image), bar, colorize(truth, colors), bar, colorize(pred, colors)], axis=1)


class TensorBoardLogger(Callback):
    """Scalars per epoch and sample predictions into ``log_dir`` (default ``RUN_DIR/tensorboard``).

    Args:
        log_dir: Folder of the event files; default ``tensorboard`` inside the run folder.
        samples: Validation images drawn each epoch (centre crops of at most 256 x 256 pixels); 0 = none.
    """

    def __init__(self, log_dir: str | Path | None = None, samples: int = SAMPLE_IMAGES) -> None:
        self.writer_class = summary_writer_class()  # fails before training when tensorboard is missing
        self.log_dir, self.samples = log_dir, samples
        self.writer = None
        self.crops: list[tuple[np.ndarray, np.ndarray]] = []

    def on_train_begin(self, view: TrainView) -> None:
        self.writer = self.writer_class(str(self.log_dir or view.run_dir / "tensorboard"))
        self.crops = [centre_crop(im, m, SAMPLE_SIZE) for im, m in zip(view.val_images[: self.samples], view.val_masks[: self.samples])]

    def on_epoch_end(self, row: dict, view: TrainView) -> None:
        epoch = row["epoch"]
        for tag, value in scalar_tags(row).items():
            self.writer.add_scalar(tag, value, epoch)
        if self.crops:
            self._samples(view, epoch)
        self.writer.flush()  # a pruned or killed run keeps every finished epoch

    def _samples(self, view: TrainView, epoch: int) -> None:
        norm = view.meta["normalization"]
        view.model.eval()
        try:
            for i, (image, truth) in enumerate(self.crops):
                x = normalize(image, norm["mean"], norm["std"])  # (C, h, w)
                pred = tiled_logits(view.model, x, view.cfg.tile, view.cfg.batch_size, view.device, view.precision).argmax(0)  # (h, w)
                self.writer.add_image(f"samples/{i}", sample_panel(image, truth, pred, view.meta["colors"]), epoch, dataformats="HWC")
        finally:
            view.model.train()

    def on_train_end(self, result, view: TrainView) -> None:
        self.close()

    def close(self, error: BaseException | None = None) -> None:
        """Flush and close the event file (again: no-op)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def local_store(run_dir: Path) -> str:
    """The default MLflow tracking URI of a run: SQLite in ``RUN_DIR/mlflow/mlflow.db``."""
    folder = (run_dir / "mlflow").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(folder / 'mlflow.db').as_posix()}"


def end_status(error: BaseException | None) -> str:
    """MLflow's status of a run that ended with ``error``: FINISHED, KILLED (interrupted or pruned) or FAILED."""
    if error is None:
        return "FINISHED"
    optuna = sys.modules.get("optuna")
    stopped = (KeyboardInterrupt, TrainingInterrupted) + ((optuna.TrialPruned,) if optuna else ())
    return "KILLED" if isinstance(error, stopped) else "FAILED"


class MLflowLogger(Callback):
    """One MLflow run per training: params, metrics per epoch, artifacts at the end.

    Args:
        uri: Tracking URI; default the run's ``mlflow_uri`` option, else SQLite in ``RUN_DIR/mlflow``.
        experiment: Experiment name (created when missing; for a SQLite store its artifacts go beside the
            database, in ``artifacts/``).
    """

    def __init__(self, uri: str | None = None, experiment: str = "unetkit") -> None:
        self.mlflow = mlflow_module()  # fails before training when MLflow is missing
        self.uri, self.experiment = uri, experiment
        self.client = None
        self.run_id: str | None = None
        self.run_dir: Path | None = None

    def on_train_begin(self, view: TrainView) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = self.uri or view.cfg.mlflow_uri or local_store(view.run_dir)
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(self.experiment)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            artifacts = None
            if uri.startswith("sqlite:///"):
                artifacts = (Path(uri[len("sqlite:///"):]).parent / "artifacts").resolve().as_uri()
            experiment_id = self.client.create_experiment(self.experiment, artifact_location=artifacts)
        self.run_dir = view.run_dir
        run = self.client.create_run(experiment_id, run_name=str(view.cfg.out), tags={"unetkit.run_dir": str(view.run_dir.resolve())})
        self.run_id = run.info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in view.cfg.to_dict().items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i : i + 100])

    def on_epoch_end(self, row: dict, view: TrainView) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, int(row["epoch"])) for k, v in numeric(row).items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def on_train_end(self, result, view: TrainView) -> None:
        if result.best_dice is not None:
            self.client.log_metric(self.run_id, "best_val_dice", result.best_dice)
        self.close()

    def close(self, error: BaseException | None = None) -> None:
        """Log the run folder's files and end the MLflow run (again: no-op)."""
        if self.run_id is None:
            return
        run_id, self.run_id = self.run_id, None
        folder = RunFolder(self.run_dir)
        for path in (folder.metrics, folder.curves, folder.config):
            if path.is_file():
                self.client.log_artifact(run_id, str(path))
        if folder.best.is_file():
            self.client.set_tag(run_id, "unetkit.best_checkpoint", str(folder.best.resolve()))
        self.client.set_terminated(run_id, status=end_status(error))


class ValidationReport(Callback):
    """At the end of a run, evaluate its best.pt on the validation images into ``RUN_DIR/report`` (an HTML report)."""

    def on_train_end(self, result, view: TrainView) -> None:
        if view.val_pairs:
            cfg = view.cfg
            options = InferenceOptions(device=cfg.device, tile=cfg.tile, batch_size=cfg.batch_size, precision=view.precision)
            validation_report(view.run_dir, view.spec, view.val_pairs, options, cfg.progress)


LOGGERS = {"tensorboard": TensorBoardLogger, "mlflow": MLflowLogger}


@contextlib.contextmanager
def trackers(cfg) -> Iterator[list]:
    """The loggers that ``cfg.log`` names, closed when the block ends: normally, on an error, or when pruned.

    Example:
        >>> with trackers(cfg) as loggers:  # doctest: +SKIP
        ...     unetkit.engine.trainer.train(cfg, callbacks=loggers)
    """
    loggers = [LOGGERS[name]() for name in dict.fromkeys(cfg.log)]
    error = None
    try:
        yield loggers
    except BaseException as e:
        error = e
        raise
    finally:
        for logger in loggers:
            try:
                logger.close(error)
            except Exception:
                if error is None:
                    raise  # else the run's own error is the one to see


@contextlib.contextmanager
def run_callbacks(cfg, callbacks=()) -> Iterator[list]:
    """The callbacks of a run as ``unetkit.train`` makes it: the end-of-run :class:`ValidationReport` (``cfg.report``),
    then ``callbacks``, then the loggers ``cfg.log`` names, closed when the block ends (see :func:`trackers`).

    Example:
        >>> with run_callbacks(cfg, [my_callback]) as callbacks:  # doctest: +SKIP
        ...     unetkit.engine.trainer.train(cfg, callbacks=callbacks)
    """
    with trackers(cfg) as loggers:
        yield [*([ValidationReport()] if cfg.report else []), *callbacks, *loggers]
