"""Checkpoints are plain data: atomic, loadable with weights_only, and never unpickle code."""

import json

import pytest
import torch

from unetkit.engine.checkpoint import load_checkpoint, save_checkpoint
from unetkit.errors import UnetkitError
from unetkit.models.unet import UNet


def test_round_trip_and_weights_only(tmp_path):
    net = UNet(base_channels=2, depth=2)
    meta = {"model": net.config.to_dict(), "classes": ["a", "b"]}
    save_checkpoint(tmp_path / "m.pt", net.state_dict(), meta, optimizer={"state": {}, "param_groups": []})
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    assert json.loads(raw["meta"]) == meta
    ck = load_checkpoint(tmp_path / "m.pt")
    assert ck["meta"]["classes"] == ["a", "b"]
    assert all(torch.equal(ck["model"][k], v) for k, v in net.state_dict().items())
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left behind


class Payload:
    def __reduce__(self):
        return (print, ("pwned",))


def test_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "unetkit-checkpoint", "version": 1, "meta": "{}", "model": {}, "x": Payload()}, path)
    with pytest.raises(UnetkitError, match="evil.pt: refused to load"):
        load_checkpoint(path)


@pytest.mark.parametrize("content,match", [(b"", "not a readable checkpoint"), (b"garbage" * 10, "not a readable checkpoint")])
def test_corrupt_or_missing(tmp_path, content, match):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(UnetkitError, match=match):
        load_checkpoint(path)
    with pytest.raises(UnetkitError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_checkpoint(tmp_path):
    net = UNet(base_channels=2, depth=2)
    save_checkpoint(tmp_path / "m.pt", net.state_dict(), {})
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(UnetkitError, match="cut.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")


def test_not_a_unetkit_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(UnetkitError, match="not a unetkit checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


