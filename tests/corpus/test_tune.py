"""Hostile search spaces and options for ``unetkit tune``: each is refused before a trial runs or the study folder appears."""

import pytest

from tests.corpus.kit import Untouched, assert_no_output, expect_error

BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefg", "bcdefgh"))

SPACES = {
    "unknown option, with a suggestion": ("lrr: {type: float, low: 0.1, high: 1}", "unknown option 'lrr'; did you mean 'lr'?"),
    "unknown type": ("lr: {type: uniform, low: 1, high: 2}", "type must be float, int or categorical"),
    "low above high": ("lr: {type: float, low: 0.01, high: 0.001}", "must be less than high"),
    "range without high": ("lr: {type: float, low: 1e-4}", "needs low and high"),
    "misspelt field": ("lr: {type: float, low: 1e-4, high: 1e-2, logg: true}", "unknown field(s) logg"),
    "log with step": ("lr: {type: float, low: 1e-4, high: 1e-2, log: true, step: 0.001}", "log and step cannot be combined"),
    "bound that is not a number": ("lr: {type: float, low: x, high: 1}", "low must be a number, got 'x'"),
    "list instead of a spec": ("lr: [0.1, 0.2]", "expected {type: float|int|categorical"),
    "choice outside the option's": ("optimizer: {type: categorical, choices: [sgd, rmsprop]}", "optimizer='rmsprop' is not one of"),
    "empty choices": ("optimizer: {type: categorical, choices: []}", "choices must be a non-empty list"),
    "range for a word option": ("optimizer: {type: float, low: 1, high: 2}", "takes str values, not a range"),
    "fractional range for a whole-number option": ("base_channels: {type: float, low: 8, high: 16}", "takes whole numbers"),
    "fractional choice for a whole-number option": ("base_channels: {type: categorical, choices: [8, 12.5]}", "12.5 is not a valid int"),
    "range outside the option's bounds": ("patch_size: {type: int, low: 0, high: 64}", "patch_size must be >= 1, got 0"),
    "a list option": ("class_weights: {type: categorical, choices: [1]}", "list options cannot be searched"),
    "an option tune sets itself": ("data: {type: categorical, choices: [a, b]}", "set by tune itself"),
    "a list at the top": ("- lr", "expected a mapping of option"),
    "broken YAML": ("lr: {type: float, low: [", "not valid YAML"),
    "YAML alias bomb": (BOMB, "aliases"),
    "infinite bound": ("lr: {type: float, low: 1e-4, high: .inf}", "lr"),
}


@pytest.mark.parametrize("case", SPACES)
def test_tune_refuses_a_bad_search_space(tiny_data, tmp_path, capsys, case):
    text, fragment = SPACES[case]
    space = tmp_path / "space.yaml"
    space.write_text(text)
    untouched = Untouched(tiny_data, space)
    out = tmp_path / "study"
    expect_error(capsys, ["tune", "--data", tiny_data, "--space", space, "--out", out, "--trials", "1"], fragment, ["space.yaml"])
    untouched.check()
    assert_no_output(out)


OTHER = {
    "space file missing": (lambda t: ["--space", t / "nope.yaml"], "search space file not found", ["nope.yaml"]),
    "space that is not UTF-8": (lambda t: (t / "s.yaml").write_bytes(b"lr: \xff\xfe") and ["--space", t / "s.yaml"], "UTF-8", ["s.yaml"]),
    "config that is a list": (lambda t: (t / "c.yaml").write_text("- 1\n") and ["--config", t / "c.yaml"], "expected a mapping", ["c.yaml"]),
    "config with an unknown key": (lambda t: (t / "c.yaml").write_text("epoch: 3\n") and ["--config", t / "c.yaml"], "did you mean 'epochs'", ["c.yaml"]),
    "zero trials": (lambda t: ["--trials", "0"], "trials must be >= 1", []),
    "negative time": (lambda t: ["--time", "-1"], "time must be", []),
    "every searched option fixed": (lambda t: (t / "s.yaml").write_text("lr: {type: float, low: 1e-4, high: 1e-2}\n") and ["--space", t / "s.yaml", "--lr", "0.01"],
                                    "nothing to search", []),
    "no data": (lambda t: ["--data", t / "missing"], "missing", []),
}


@pytest.mark.parametrize("case", OTHER)
def test_tune_refuses_bad_files_and_options(tiny_data, tmp_path, capsys, case):
    make, fragment, names = OTHER[case]
    extra = make(tmp_path)
    untouched = Untouched(tiny_data)
    out = tmp_path / "study"
    expect_error(capsys, ["tune", "--data", tiny_data, "--out", out, *extra], fragment, names)
    untouched.check()
    assert_no_output(out)
