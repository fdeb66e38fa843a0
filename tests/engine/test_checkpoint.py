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




def _tampered(tmp_path, **change):
    """A checkpoint whose metadata was edited after it was written."""
    from tests.inference.test_stream import make_checkpoint

    ck = torch.load(make_checkpoint(tmp_path / "m.pt"), weights_only=True)
    meta = json.loads(ck["meta"])
    meta["model"].update(change.pop("model", {}))
    meta.update(change)
    torch.save(dict(ck, meta=json.dumps(meta)), tmp_path / "bad.pt")
    return tmp_path / "bad.pt"


@pytest.mark.parametrize("model, message", [
    ({"depth": 40}, "its model metadata is not a U-Net configuration (Storage size calculation overflowed"),
    ({"base_channels": 10**9}, "its model metadata is not a U-Net configuration (Storage size calculation overflowed"),
    ({"base_channels": 1e9}, "its model metadata is not a U-Net configuration (base_channels must be an integer, got 1000000000.0)"),
    ({"depth": "4"}, "its model metadata is not a U-Net configuration (depth must be an integer, got '4')"),
    ({"num_classes": 3}, "its model metadata does not match its weights (head.bias: (3,) by the metadata, (2,) stored)"),
])
def test_edited_model_metadata_is_refused_before_a_network_is_built(tmp_path, model, message):
    """Checked on the meta device: a 40-level or billion-channel description allocates nothing."""
    import resource

    import unetkit

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(UnetkitError) as error:
        unetkit.load(_tampered(tmp_path, model=model))
    assert str(error.value).startswith(f"{tmp_path / 'bad.pt'}: {message}")
    assert str(error.value).endswith("the file is damaged or was edited; re-train or re-copy it")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB: no network was allocated


def test_metadata_that_is_not_json_or_lacks_what_prediction_needs(tmp_path):
    import unetkit

    path = _tampered(tmp_path)
    torch.save(dict(torch.load(path, weights_only=True), meta="{not json"), path)
    with pytest.raises(UnetkitError, match="bad.pt: its metadata is not JSON; the file is damaged or was edited"):
        load_checkpoint(path)
    meta = json.loads(torch.load(tmp_path / "m.pt", weights_only=True)["meta"])
    del meta["classes"]
    torch.save(dict(torch.load(tmp_path / "m.pt", weights_only=True), meta=json.dumps(meta)), path)
    with pytest.raises(UnetkitError, match="bad.pt: its metadata lacks classes, which prediction needs"):
        unetkit.load(path)
