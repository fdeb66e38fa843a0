"""The ``unetkit`` command: parse, validate, and call the API function of the same name. No logic here."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import fields

from unetkit.config import TrainConfig, field_type


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.strip("[]").replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers such as 1,3 got {text!r}") from None


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a U-Net on a folder of images and masks",
                       description="Train a U-Net. Every option can also be set in --config YAML; flags override it.")
    p.add_argument("--config", help="YAML file of options (same names as the flags, with underscores)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from RUN_DIR/last.pt (flags may change the budget or --lr)")
    p.add_argument("--force", action="store_true", help="with --resume: continue even a run that stopped on a NaN loss")
    p.add_argument("--nproc", type=int, metavar="N", help="train in N processes on this machine under torchrun (DistributedDataParallel; "
                   "global batch N x --batch-size); for several machines run torchrun yourself (README: Several processes and machines)")
    p.add_argument("--max-restarts", type=int, default=0, metavar="K",
                   help="with --nproc: restart all workers up to K times after a failure, resuming from last.pt (default: 0)")
    _add_config_options(p)


def _add_config_options(p, skip: tuple[str, ...] = ()) -> None:
    """One flag per TrainConfig option but ``skip``, defaulting to None (= not given)."""
    for f in fields(TrainConfig):
        if f.name in skip:
            continue
        kind = field_type(f)
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not None else None
        help_text = f.metadata["help"] + (f" (default: {default})" if default not in (None, "") else "")
        kw = {"dest": f.name, "default": None, "help": help_text}
        if f.metadata.get("choices"):
            kw["choices"] = f.metadata["choices"]
        if kind is bool:
            kw.update(type=_bool, metavar="{true,false}")
        elif kind is list and kw.get("choices"):  # names such as --log tensorboard,mlflow; TrainConfig checks each
            kw.update(type=_names, metavar=",".join(kw.pop("choices")))
        elif kind is list:
            kw.update(type=_floats, metavar="W1,W2,...")
        else:
            kw["type"] = kind
        p.add_argument(flag, **kw)


def _add_inference_options(p) -> None:
    _add_compute_options(p)
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")


def _add_compute_options(p) -> None:
    p.add_argument("--tile", type=int, default=512, help="input tile size in pixels (default: 512)")
    p.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass (default: 4)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="arithmetic of a checkpoint; auto = bf16 where it measurably beats fp32 on this hardware, else fp32; "
                   ".onnx models compute in fp32 (default: auto)")
    p.add_argument("--backend", default="torch", choices=("torch", "onnxruntime"),
                   help="run a checkpoint with PyTorch, or export it (cached) and run it with ONNX Runtime (default: torch)")
    p.add_argument("--int8", action="store_true", help="ONNX Runtime with static int8 quantisation, calibrated on training images; "
                   "refused when it loses more than 0.005 mean Dice against fp32 on them")
    p.add_argument("--calibration", metavar="DATA", help="--int8 calibration images with masks (default: the checkpoint's training data)")


def _add_instance_options(p, what: str) -> None:
    from unetkit.instances import MIN_SIZE, SEED_THRESHOLD

    p.add_argument("--instances", action="store_true", help=what)
    p.add_argument("--min-size", type=int, default=MIN_SIZE, help=f"with --instances: remove objects of fewer pixels (default: {MIN_SIZE})")
    p.add_argument("--seed-threshold", type=float, default=SEED_THRESHOLD,
                   help=f"with --instances: interior probability above which pixels seed the watershed (default: {SEED_THRESHOLD})")
    p.add_argument("--fill-holes", type=_bool, default=True, metavar="{true,false}", help="with --instances: fill holes inside objects (default: true)")


def build_parser() -> argparse.ArgumentParser:
    from unetkit import __version__

    parser = argparse.ArgumentParser(
        prog="unetkit",
        description="U-Net semantic segmentation: train, predict on images of any size, evaluate.",
        epilog="Run 'unetkit COMMAND --help' for a command's options. Start with 'unetkit demo'.",
    )
    parser.add_argument("--version", action="version", version=f"unetkit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    _add_train(sub)

    p = sub.add_parser("predict", help="segment images of any size with overlap-tile inference")
    p.add_argument("--model", required=True, help="checkpoint (a run's best.pt or last.pt) or an exported .onnx model")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, zarr stores or folders (searched recursively)")
    p.add_argument("--out", required=True, help="output folder: NAME.png class-index masks (NAME.tif for streamed images); "
                   "or, for one input, a .tif/.tiff/.zarr file to stream the mask into")
    p.add_argument("--probabilities", action="store_true", help="also write NAME_prob.tif: float32 (C, H, W) probabilities")
    p.add_argument("--overlay", action="store_true", help="also write NAME_overlay.png: class colours over the image")
    _add_instance_options(p, "also write NAME_instances.tif (uint16 object labels) and NAME_objects.csv (area, centroid, box, "
                             "mean probability); touching objects are split for models trained with --target instances")
    _add_inference_options(p)
    g = p.add_argument_group("images bigger than memory (docs/large-images.md)")
    g.add_argument("--stream", default="auto", choices=("auto", "always", "never"),
                   help="read and write tile by tile; auto = zarr stores, GeoTIFFs, images over 64 MP, and --out FILE (default: auto)")
    g.add_argument("--pyramid", action="store_true", help="streamed masks: add half-resolution levels (TIFF SubIFDs, GeoTIFF overviews, zarr levels)")
    g.add_argument("--nodata-class", type=int, default=255, help="GeoTIFF input: class written where all bands are nodata; those tiles are skipped (default: 255)")
    g.add_argument("--dask", metavar="ADDRESS", help="run the tiles of streamed images on this Dask scheduler (e.g. tcp://host:8786)")
    g.add_argument("--dask-workers", type=int, default=0, metavar="N", help="run them on a local Dask cluster of N worker processes instead")

    p = sub.add_parser("evaluate", help="score a model on labelled data, or saved predictions against masks",
                       description="Either --model with --data, or --pred with --truth.")
    p.add_argument("--model", help="checkpoint or exported .onnx model to evaluate on --data")
    p.add_argument("--data", help="labelled data set (folder or dataset.yaml)")
    p.add_argument("--split", help="a split of the dataset.yaml (e.g. val); default: all pairs")
    p.add_argument("--pred", help="folder of predicted class-index PNGs (from unetkit predict)")
    p.add_argument("--truth", help="the data set (or its masks/ folder) the predictions are scored against")
    p.add_argument("--json", dest="json_path", help="write all scores to this JSON file")
    p.add_argument("--report", help="write an HTML report into this folder")
    p.add_argument("--run", help="run folder whose training curves go into the report (default: the model's folder)")
    p.add_argument("--metrics", help="metric families, comma-separated: pixel, boundary, isbi, instances "
                   "(default: pixel,boundary, plus isbi for binary data; pixel is always included)")
    p.add_argument("--tolerance", type=float, default=2.0, help="boundary F1 tolerance in pixels (default: 2)")
    _add_instance_options(p, "add the object metrics on the objects predict --instances makes (or its NAME_instances.tif "
                             "beside --pred): AP at IoU 0.50..0.95 (DSB 2018), aggregated Jaccard, splits and merges")
    _add_inference_options(p)

    p = sub.add_parser("demo", help="train on generated data, predict, evaluate and write a report (a few minutes)")
    p.add_argument("--out", default="unetkit-demo", help="output folder (default: unetkit-demo)")
    p.add_argument("--epochs", type=int, default=12, help="training epochs (default: 12)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")

    p = sub.add_parser("recipe", help="train, score and draw one of examples/ (ISBI 2012, DSB 2018, Dubai aerial, CamVid) in one command",
                       description="Train a recipe folder's config.yaml on its dataset.yaml, score the validation split per class, "
                       "and write results.json, an HTML report and a figure of validation images into --out.")
    p.add_argument("recipe", metavar="RECIPE", help="recipe folder holding dataset.yaml and config.yaml, e.g. examples/isbi2012")
    p.add_argument("--data", help="the data set folder (with the same images/ and masks/ folders) when it is not in ../shared/data/")
    p.add_argument("--out", help="output folder (default: runs/RECIPE_NAME)")
    p.add_argument("--time", type=float, help="training minutes instead of the recipe's")
    p.add_argument("--figure", dest="figure_path", metavar="PNG", help="also write the figure here (e.g. docs/gallery/NAME.png)")
    p.add_argument("--figure-images", type=int, default=3, help="validation images in the figure (default: 3)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")

    p = sub.add_parser("check", help="diagnose a data set: pairs, sizes, bit depths, mask encoding, class balance",
                       description="Check a data set and list every problem with its fix. Exits 0 when usable, 1 when it has errors.")
    p.add_argument("data", metavar="DATA", help="data set folder (images/ and masks/) or dataset.yaml")
    p.add_argument("--mask-mode", default="auto", choices=("auto", "index", "binary", "color", "instances"), help="force a mask encoding (default: auto)")
    p.add_argument("--json", action="store_true", help="print the report as JSON for machines")
    p.add_argument("--preview", default="unetkit-check.png", help="preview grid PNG of images with masks overlaid (default: unetkit-check.png)")
    p.add_argument("--no-preview", dest="preview", action="store_const", const=None, help="write no preview")
    p.add_argument("--preview-count", type=int, default=12, help="pairs drawn in the preview (default: 12)")
    p.add_argument("--weights", metavar="OUT", help="write the paper's border weight map of every pair into folder OUT")
    p.add_argument("--weight-w0", type=float, default=10.0, help="border term height w0 (default: 10)")
    p.add_argument("--weight-sigma", type=float, default=5.0, help="border term width sigma in pixels (default: 5)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")

    p = sub.add_parser("export", help="export a checkpoint to ONNX (or TorchScript) with its preprocessing in the file",
                       description="Write a model file that carries its normalisation, classes, colours and geometry; "
                       "batch, height and width are dynamic. unetkit predict/serve/evaluate accept the .onnx file.")
    p.add_argument("--model", required=True, help="checkpoint: a run's best.pt or last.pt")
    p.add_argument("--out", required=True, help="file to write: model.onnx (or e.g. model.torchscript); replaced if it exists")
    p.add_argument("--format", default="onnx", choices=("onnx", "torchscript"), help="file format (default: onnx)")
    p.add_argument("--tile", type=int, default=512, help="recommended input tile size stored in the file (default: 512)")

    p = sub.add_parser("tune", help="search hyperparameters with Optuna within a time budget (resumable)",
                       description="Search learning rate, optimiser, loss, augmentation, width and patch size (or the options of a "
                       "--space YAML, docs/tuning.md). Each trial is a run folder OUT/trial_NNN trained for TIME/TRIALS minutes; trial 0 "
                       "is the default configuration. Rerunning the command resumes OUT/study.db. Writes OUT/best.yaml (for train "
                       "--config), best.pt, trials.csv, history.png and importances.png.")
    p.add_argument("--data", required=True, help="training data, a folder or dataset.yaml (validation as for train)")
    p.add_argument("--trials", type=int, default=20, help="trials in all, those already in OUT/study.db included (default: 20)")
    p.add_argument("--time", type=float, default=60.0, help="minutes for this search, shared equally by the trials it runs (default: 60)")
    p.add_argument("--space", help="YAML search space replacing the default (format: docs/tuning.md)")
    p.add_argument("--out", default="runs/tune", help="study folder: study.db, trial_NNN/, best.yaml, best.pt, plots (default: runs/tune)")
    p.add_argument("--pruner", default="median", choices=("median", "halving", "none"),
                   help="stop trials whose validation Dice falls behind: median of earlier trials, successive halving, or none (default: median)")
    p.add_argument("--config", help="YAML file of training options fixed for every trial")
    _add_config_options(p.add_argument_group("training options, fixed for every trial and then not searched"), skip=("data", "out", "time"))

    from unetkit.runlist import COLUMNS

    p = sub.add_parser("runs", help="list run folders with their settings and best validation scores, sortable")
    p.add_argument("dir", nargs="?", default="runs", metavar="DIR", help="folder to search recursively (default: runs)")
    p.add_argument("--sort", default="dice", choices=COLUMNS, metavar="KEY",
                   help=f"column to sort by, numbers highest first: {', '.join(COLUMNS)} (default: dice)")
    p.add_argument("--reverse", action="store_true", help="the opposite order")
    p.add_argument("--json", action="store_true", help="print the rows as JSON for machines")

    from unetkit.server import Limits

    p = sub.add_parser("serve", help="serve a model over HTTP: POST /predict, GET /health, and a web page at /",
                       description="Start an HTTP server (FastAPI + uvicorn) until Ctrl-C. Listens on loopback unless --host says otherwise.")
    p.add_argument("--model", required=True, help="checkpoint (best.pt) or exported .onnx model")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on; 0.0.0.0 exposes the server to the network (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    p.add_argument("--max-upload-mb", type=float, default=Limits.max_upload_mb, help=f"largest upload in MB (default: {Limits.max_upload_mb:g})")
    p.add_argument("--max-pixels", type=int, default=Limits.max_pixels, help=f"largest image, height x width (default: {Limits.max_pixels})")
    p.add_argument("--workers", type=int, default=Limits.workers, help=f"images segmented at the same time (default: {Limits.workers})")
    p.add_argument("--max-queue", type=int, default=Limits.max_queue,
                   help=f"requests that may wait for a worker; more get 503 (default: {Limits.max_queue})")
    _add_compute_options(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    import unetkit
    from unetkit.errors import UnetkitError

    from unetkit.engine import distributed
    from unetkit.engine.trainer import TrainingInterrupted

    args = vars(build_parser().parse_args(argv))
    command = args.pop("command")
    debug = args.pop("debug")
    try:
        if command == "train":
            launched = args["nproc"] is not None  # then worker rank 0 prints the summary
            result = unetkit.train(args.pop("config"), resume=args.pop("resume"), force=args.pop("force"), **args)
            best = "-" if result.best_dice is None else f"{result.best_dice:.4f}"
            if not launched and distributed.env_rank() == 0:
                print(f"trained {result.epochs} epochs ({result.steps} steps) in {result.seconds / 60:.1f} min; "
                      f"best validation mean Dice {best}; checkpoints in {result.run_dir}")
        elif command == "predict":
            written = unetkit.predict(args.pop("model"), args.pop("inputs"), args.pop("out"), **args)
            print(f"wrote {len(written)} file(s)")
        elif command == "evaluate":
            result = unetkit.evaluate(**args)
            from unetkit.report import format_table

            print(format_table(result))
        elif command == "demo":
            from unetkit.demo import run_demo

            summary = run_demo(**args)
            print(json.dumps({k: str(v) if not isinstance(v, (int, float)) else round(v, 4) for k, v in summary.items()}, indent=2))
            print(f"report: {summary['report']}")
        elif command == "recipe":
            from unetkit.recipes import format_results

            results = unetkit.recipe(command="unetkit recipe " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])[1:]), **args)
            print(format_results(results))
            print(f"trained {results['train_minutes']:.1f} min ({results['epochs']} epochs); results, report and figure in {args['out'] or 'runs/' + results['recipe']}")
        elif command == "check":
            from unetkit.data.doctor import format_report

            as_json = args.pop("json")
            report = unetkit.check(**args)
            print(json.dumps(report, indent=2) if as_json else format_report(report))
            return 0 if report["usable"] else 1
        elif command == "export":
            out = unetkit.export(**args)
            print(f"wrote {out}")
        elif command == "serve":
            unetkit.serve(**args)
        elif command == "tune":
            result = unetkit.tune(**args)
            defaults = "-" if result.default_dice is None else f"{result.default_dice:.4f}"
            print(result.table)
            print(f"best: trial {result.best_trial}, validation mean Dice {result.best_dice:.4f} (defaults: {defaults}); "
                  f"{result.complete} complete, {result.pruned} pruned, {result.failed} failed; "
                  f"train it with: unetkit train --config {result.out / 'best.yaml'}")
        elif command == "runs":
            from unetkit.runlist import format_runs

            as_json = args.pop("json")
            rows = unetkit.runs(**args)
            print(json.dumps(rows, indent=2) if as_json else format_runs(rows, args["dir"]))
    except distributed.WorkersFailed as e:  # unetkit train --nproc: one line for the run, unless rank 0 printed it
        if e.line:
            print(e.line, file=sys.stderr)
        return e.exit_code
    except TrainingInterrupted as e:
        distributed.print_once(f"unetkit: interrupted: {e}")  # under torchrun: on rank 0 only
        return 130
    except UnetkitError as e:
        if debug:
            raise
        distributed.print_once(f"unetkit: error: {e}")
        return 2
    except KeyboardInterrupt:
        print("unetkit: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug or not distributed.lost_peer(e):
            raise
        return distributed.report_lost_peer(e)  # another worker failed: torchrun (or --nproc) reports that one
    return 0
