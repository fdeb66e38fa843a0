"""The ``unetkit`` command: flags generated from the typed options of the API function of the same name.

Each command is one function of :mod:`unetkit.api`; its flags come from the option dataclasses that
function takes (:mod:`unetkit.commands`, :class:`~unetkit.config.TrainConfig`), so names, defaults,
choices and help are stated once. Only the flags the user gives are passed on: the API fills the
defaults. Spellings are the same on every command: ``--foo-bar`` for option ``foo_bar``; booleans as a
bare ``--flag`` or ``--no-flag`` (``--flag true``/``--flag false`` also work, as in config files); lists
comma-separated. This module imports no torch: the API is loaded after parsing.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import sys
from dataclasses import MISSING, dataclass, fields
from typing import NoReturn

from unetkit.commands import (
    CheckOptions, DemoOptions, EvaluateOptions, ExportOptions, PlanOptions, PredictOptions, RecipeOptions, RunsOptions,
    ServeOptions, TrainRun, TuneOptions,
)
from unetkit.config import TrainConfig
from unetkit.options import field_type, item_type
from unetkit.version import __version__

TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


@dataclass(frozen=True)
class Command:
    """One subcommand: the function it calls (``module:name``), its one-line help and description, and the
    option classes its flags come from.

    ``skip`` names options of those classes that the command sets itself (tune sets each trial's data and budget).
    ``json``: the command can print its result as JSON (``--json``) instead of text.
    """

    target: str
    help: str
    options: tuple[type, ...]
    description: str = ""
    skip: tuple[str, ...] = ()
    json: bool = False


COMMANDS = {
    "train": Command("unetkit.api:train", "train a U-Net on a folder of images and masks", (TrainRun, TrainConfig),
                     "Train a U-Net. Every option can also be set in --config YAML; flags override it."),
    "plan": Command("unetkit.api:plan", "show how train would size the network and the patches for a data set and a budget, and why",
                    (PlanOptions, TrainConfig), "Fingerprint the training split, time candidate networks on this machine (with --time), "
                    "and print each planned option with its reason, without training. Options given here are kept, as train keeps them.",
                    skip=("data", "out", "config"), json=True),
    "predict": Command("unetkit.api:predict", "segment images of any size with overlap-tile inference", (PredictOptions,)),
    "evaluate": Command("unetkit.evaluation:evaluate", "score a model on labelled data, or saved predictions against masks", (EvaluateOptions,),
                        "Either --model with --data, or --pred with --truth.", json=True),
    "demo": Command("unetkit.demo:run_demo", "train on generated data, predict, evaluate and write a report (a few minutes)", (DemoOptions,)),
    "recipe": Command("unetkit.recipes:recipe", "train, score and draw one of examples/ (ISBI 2012, DSB 2018, Dubai aerial, CamVid) in one command", (RecipeOptions,),
                      "Train a recipe folder's config.yaml on its dataset.yaml, score the validation split per class, and write "
                      "results.json, an HTML report and a figure of validation images into --out."),
    "check": Command("unetkit.api:check", "diagnose a data set: pairs, sizes, bit depths, mask encoding, class balance", (CheckOptions,),
                     "Check a data set and list every problem with its fix. Exits 0 when usable, 1 when it has errors.", json=True),
    "export": Command("unetkit.api:export", "export a checkpoint to ONNX (or TorchScript) with its preprocessing in the file", (ExportOptions,),
                      "Write a model file that carries its normalisation, classes, colours and geometry; batch, height and width "
                      "are dynamic. unetkit predict/serve/evaluate accept the .onnx file."),
    "tune": Command("unetkit.tuning:tune", "search hyperparameters with Optuna within a time budget (resumable)", (TuneOptions, TrainConfig),
                    "Search learning rate, optimiser, loss, augmentation, width and patch size (or the options of a --space YAML, "
                    "docs/tuning.md). Each trial is a run folder OUT/trial_NNN trained for TIME/TRIALS minutes; trial 0 is the "
                    "default configuration. Rerunning the command resumes OUT/study.db. Writes OUT/best.yaml (for train --config), "
                    "best.pt, trials.csv, history.png and importances.png. Training flags are fixed for every trial and then not searched.",
                    skip=("data", "out", "time", "config", "folds", "fold")),
    "runs": Command("unetkit.runlist:runs", "list run folders with their settings and best validation scores, sortable", (RunsOptions,), json=True),
    "serve": Command("unetkit.api:serve", "serve a model over HTTP: POST /predict, GET /health, and a web page at /", (ServeOptions,),
                     "Start an HTTP server (FastAPI + uvicorn) until Ctrl-C. Listens on loopback unless --host says otherwise."),
}


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.strip("[]").replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers such as 1,3 got {text!r}") from None


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _help(f) -> str:
    default = f.default if f.default is not MISSING else (f.default_factory() if f.default_factory is not MISSING else MISSING)
    shown = {True: "true", False: "false"}.get(default, default) if isinstance(default, bool) else default
    return f.metadata["help"] + ("" if shown in (MISSING, None, "", []) else f" (default: {shown})")


def add_option(parser, cls: type, f) -> None:
    """One argument for option ``f`` of ``cls``; its value reaches the namespace only when given."""
    kind, meta = field_type(cls, f), f.metadata
    required = f.default is MISSING and f.default_factory is MISSING
    kw: dict = {"help": _help(f), "default": argparse.SUPPRESS}
    if meta.get("metavar"):
        kw["metavar"] = meta["metavar"]
    if meta.get("positional"):
        nargs = "+" if kind is list else None if required else "?"
        parser.add_argument(f.name, nargs=nargs, **kw)
        return
    flag = _flag(f.name)
    if kind is bool:
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        return
    if kind is list:
        names = item_type(cls, f) is str
        kw["type"] = _names if names else _floats
        kw.setdefault("metavar", ",".join(meta["choices"]) if meta.get("choices") else "NAME,..." if names else "N1,N2,...")
    else:
        kw["type"] = kind
        if meta.get("choices"):
            kw["choices"] = meta["choices"]
    parser.add_argument(flag, required=required, **kw)
    if meta.get("negatable"):  # an output on by default: --no-preview turns it off
        parser.add_argument("--no-" + flag[2:], dest=f.name, action="store_const", const=None, default=argparse.SUPPRESS,
                            help=f"do not write {flag[2:]}")


def _groups(command: Command) -> list[tuple[str | None, list]]:
    """The command's options as (group title, [(class, field)]): the command's own first (title None), then
    each mixed-in or further class under its docstring's first line."""
    groups: dict[str | None, list] = {}
    seen: set[str] = set()
    for cls in command.options:
        skip = command.skip if cls is not command.options[0] else ()
        for f in fields(cls):
            if not f.metadata.get("cli", True) or f.name in skip or f.name in seen:
                continue
            seen.add(f.name)
            owner = next(c for c in cls.__mro__ if f.name in c.__dict__.get("__annotations__", {}))
            title = None if owner is command.options[0] else (owner.__doc__ or owner.__name__).split(":")[0].split(".")[0]
            groups.setdefault(title, []).append((cls, f))
    return [(None, groups.pop(None, []))] + list(groups.items())


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line, like every other unetkit error (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"unetkit: error: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="unetkit",
        description="U-Net semantic segmentation: train, predict on images of any size, evaluate.",
        epilog="Run 'unetkit COMMAND --help' for a command's options. Start with 'unetkit demo'.",
    )
    parser.add_argument("--version", action="version", version=f"unetkit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.description or command.help)
        for group, options in _groups(command):
            target = p if group is None else p.add_argument_group(group)
            for cls, f in options:
                add_option(target, cls, f)
        if command.json:
            p.add_argument("--json", action="store_true", help="print the result as JSON for machines")
    return parser


def bool_flags(command: str) -> set[str]:
    """The boolean flags of ``command``: ``--x`` for each bool option (``--no-x`` is its twin)."""
    return {_flag(f.name) for cls in COMMANDS[command].options for f in fields(cls) if field_type(cls, f) is bool}


def spell_booleans(argv: list[str], flags: set[str]) -> list[str]:
    """``--x true``/``--x=false`` (config-file style) as the bare ``--x``/``--no-x`` that argparse takes."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg, value = argv[i], None
        if "=" in arg and arg.split("=", 1)[0] in flags:
            arg, value = arg.split("=", 1)
        elif arg in flags and i + 1 < len(argv) and argv[i + 1].lower() in TRUE + FALSE:
            value, i = argv[i + 1], i + 1
        if value is not None and value.lower() not in TRUE + FALSE:
            raise ValueError(f"{arg}: expected true or false, got {value!r}")
        out.append(arg if value is None or value.lower() in TRUE else "--no-" + arg[2:])
        i += 1
    return out


def parse(argv: list[str]) -> dict:
    """The command line as ``{"command", "debug", "json", option: value...}``, with only the given options."""
    parser = build_parser()
    command = next((a for a in argv if not a.startswith("-")), None)  # the first word; global flags come before it
    if command in COMMANDS:
        try:
            argv = spell_booleans(argv, bool_flags(command))
        except ValueError as error:
            parser.error(str(error))  # usage, the one line, exit status 2
    args = vars(parser.parse_args(argv))
    args.setdefault("json", False)
    return args


def _print_train(result, args: dict) -> None:
    from unetkit.engine.distributed import env_rank  # loaded already by training

    if args.get("nproc") is None and env_rank() == 0:  # with --nproc worker rank 0 printed it; under torchrun rank 0 prints
        print(result.summary())


def _print_tune(result, args: dict) -> None:
    defaults = "-" if result.default_dice is None else f"{result.default_dice:.4f}"
    print(result.table)
    print(f"best: trial {result.best_trial}, validation mean Dice {result.best_dice:.4f} (defaults: {defaults}); "
          f"{result.complete} complete, {result.pruned} pruned, {result.failed} failed; "
          f"train it with: unetkit train --config {result.out / 'best.yaml'}")


def _print_recipe(results: dict, args: dict) -> None:
    from unetkit.recipes import format_results

    print(format_results(results))
    print(f"trained {results['train_minutes']:.1f} min ({results['epochs']} epochs); results, report and figure in "
          f"{args.get('out') or 'runs/' + results['recipe']}")


def _print_text(command: str, result, args: dict) -> None:
    """Print a command's result for people."""
    if command == "train":
        _print_train(result, args)
    elif command == "tune":
        _print_tune(result, args)
    elif command == "recipe":
        _print_recipe(result, args)
    elif command == "predict":
        print(f"wrote {len(result)} file(s)")
    elif command == "plan":
        from unetkit.engine.planned import format_plan

        print(format_plan(result))
    elif command == "export":
        print(f"wrote {result}")
    elif command == "evaluate":
        from unetkit.report import format_table

        print(format_table(result))
    elif command == "demo":
        print(json.dumps({k: str(v) if not isinstance(v, (int, float)) else round(v, 4) for k, v in result.items()}, indent=2))
        print(f"report: {result['report']}")
    elif command == "check":
        from unetkit.checking import format_report

        print(format_report(result))
    elif command == "runs":
        from unetkit.runlist import format_runs

        print(format_runs(result, args.get("dir", RunsOptions.dir)))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parse(argv)
    except SystemExit as stop:  # --help, --version, or a bad command line (its line is printed)
        return stop.code if isinstance(stop.code, int) else 2
    command, debug, as_json = args.pop("command"), args.pop("debug"), args.pop("json")
    if command == "recipe":
        args["command"] = "unetkit " + " ".join(shlex.quote(a) for a in argv)
    try:
        module, name = COMMANDS[command].target.split(":")
        function = getattr(importlib.import_module(module), name)  # PyTorch and the rest load here, after parsing
        result = function(**args)
        if as_json:
            print(json.dumps(result, indent=2, default=str))
        else:
            _print_text(command, result, args)
        return 1 if command == "check" and not result["usable"] else 0  # check: 1 when the data has errors
    except BaseException as error:  # noqa: BLE001 - one line and an exit status for every failure (engine.console)
        from unetkit.engine.console import exit_code

        return exit_code(error, debug)
