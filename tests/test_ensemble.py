"""Ensembles: exact averages on hand-made tile functions, tiled == the members' whole-image mean in valid mode,
members with their own normalisation, TTA per member, refusals naming both files, ensemble.yaml, and the CLI."""

import json

import numpy as np
import pytest
import tifffile
import torch
import yaml
from PIL import Image

from unetkit.cli import main
from unetkit.engine.checkpoint import load_checkpoint, save_checkpoint
from unetkit.errors import UnetkitError
from unetkit.inference.dask_predict import checkpoint_bytes
from unetkit.inference.ensemble import MANIFEST, EnsembleForward, read_manifest, write_manifest
from unetkit.inference.options import InferenceOptions
from unetkit.inference.tiling import mirror_pad, plan_axis
from unetkit.inference.tta import TTAForward, softmax
from unetkit.loading import load_segmenter, model_sources
from unetkit.models.config import ModelConfig
from unetkit.models.unet import unet_from_weights

from tests.inference.test_stream import make_checkpoint, noise

CPU = dict(device="cpu", precision="fp32")


class ConstantForward:
    """A tile function answering the same logits at every pixel: (B, C, h, w) -> (B, K, h, w)."""

    config = ModelConfig(in_channels=1, num_classes=3, depth=1, padding="same")

    def __init__(self, logits) -> None:
        self.logits = np.asarray(logits, np.float32)
        self.seen = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.seen.append(x.copy())
        b, _, h, w = x.shape
        return np.broadcast_to(self.logits[None, :, None, None], (b, len(self.logits), h, w)).copy()


def renormalized(path, mean, std):
    """Rewrite the checkpoint at ``path`` with another normalisation (as a run on other images would have)."""
    ckpt = load_checkpoint(path)
    save_checkpoint(path, ckpt["model"], {**ckpt["meta"], "normalization": {"mean": [mean], "std": [std]}})
    return path


def whole_image_probs(ckpt, image):
    """(K, H, W) probabilities of one forward pass over the whole mirrored image, cropped: the model, not the tiler."""
    ck = load_checkpoint(ckpt)
    net = unet_from_weights(ck["meta"]["model"], ck["model"], str(ckpt)).eval()
    norm = ck["meta"]["normalization"]
    x = (image.astype(np.float32) - np.float32(norm["mean"][0])) / np.float32(norm["std"][0])  # (H, W)
    rows, cols = (plan_axis(n, 10_000, net.config.depth, "valid") for n in image.shape)
    padded = mirror_pad(x[None, None], (rows.pad_before, rows.pad_after), (cols.pad_before, cols.pad_after))
    with torch.inference_mode():
        y = net(torch.from_numpy(np.ascontiguousarray(padded))).numpy()[0]  # (K, H', W')
    return softmax(y)[:, : image.shape[0], : image.shape[1]]


def test_average_of_probabilities_by_hand():
    a, b = ConstantForward([0.0, 0.0, np.log(2.0)]), ConstantForward([np.log(3.0), 0.0, 0.0])  # probs [1,1,2]/4 and [3,1,1]/5
    out = EnsembleForward([a, b], a.config)(np.zeros((2, 1, 3, 4), np.float32))
    assert out.shape == (2, 3, 3, 4) and out.dtype == np.float32
    expected = (np.array([0.25, 0.25, 0.5]) + np.array([0.6, 0.2, 0.2])) / 2  # [0.425, 0.225, 0.35]
    np.testing.assert_allclose(softmax(out, axis=1)[1, :, 2, 3], expected, rtol=1e-6)
    np.testing.assert_allclose(np.exp(out).sum(1), 1.0, rtol=1e-6)  # the log of probabilities


def test_members_standardise_raw_tiles_themselves_and_nan_stays():
    a, b = ConstantForward([0, 0, 0]), ConstantForward([1, 0, 0])
    x = np.full((1, 1, 2, 2), 10.0, np.float32)
    EnsembleForward([a, b], a.config, [{"mean": [4.0], "std": [2.0]}, {"mean": [0.0], "std": [5.0]}])(x)
    np.testing.assert_array_equal(a.seen[0], 3.0)
    np.testing.assert_array_equal(b.seen[0], 2.0)
    nan = ConstantForward([np.nan, 0, 0])
    assert np.isnan(EnsembleForward([a, nan], a.config)(x)).any()  # prediction refuses it with the image's name


@pytest.fixture
def two(tmp_path):
    return make_checkpoint(tmp_path / "a.pt", seed=0), make_checkpoint(tmp_path / "b.pt", seed=1)


@pytest.mark.parametrize("shape,tile", [((121, 97), 76), ((37, 130), 92)])
def test_tiled_valid_ensemble_equals_mean_of_whole_image_members(two, shape, tile):
    a, b = two
    renormalized(b, 60.0, 25.0)  # its own normalisation: the ensemble takes raw tiles and each member standardises
    image = noise(shape)
    seg = load_segmenter([a, b], InferenceOptions(tile=tile, batch_size=3, **CPU))
    rows, cols = (plan_axis(n, tile, seg.config.depth, "valid") for n in shape)
    assert len(rows.starts) * len(cols.starts) > 2  # really tiled
    assert seg.meta["ensemble"] == [str(a), str(b)] and seg.meta["normalization"] == {"mean": [0.0], "std": [1.0]}
    probs = seg.predict_proba(image[:, :, None])
    expected = (whole_image_probs(a, image) + whole_image_probs(b, image)) / 2
    np.testing.assert_allclose(probs, expected, atol=2e-6)
    alone = [load_segmenter(m, InferenceOptions(tile=tile, **CPU)).predict_proba(image[:, :, None]) for m in (a, b)]
    assert np.abs(alone[0] - alone[1]).max() > 0.01  # the members disagree: the mean is not either of them


def test_shared_normalisation_is_kept_and_one_model_loads_as_itself(two):
    a, b = two
    seg = load_segmenter(f"{a},{b}", InferenceOptions(**CPU))  # the CLI's spelling
    assert seg.meta["normalization"] == {"mean": [100.0], "std": [40.0]} and seg.forward.normalizations is None
    assert seg.model is None and seg.classes == ["c0", "c1"]
    single = load_segmenter(str(a), InferenceOptions(**CPU))
    assert "ensemble" not in single.meta and single.model is not None
    assert load_segmenter([a], InferenceOptions(**CPU)).model is not None
    with pytest.raises(UnetkitError, match="--dask runs one PyTorch checkpoint; this ensemble of 2 models runs here"):
        checkpoint_bytes(seg)


def test_tta_runs_in_each_member_then_the_average(two):
    a, b = two
    image = noise((45, 50))[:, :, None]
    seg = load_segmenter([a, b], InferenceOptions(tta=True, tile=76, **CPU))
    assert seg.options.tta and all(isinstance(f, TTAForward) for f in seg.forward.forwards)
    assert not isinstance(seg.forward, TTAForward)  # not a second TTA around the average
    members = [load_segmenter(m, InferenceOptions(tta=True, tile=76, **CPU)).predict_proba(image) for m in (a, b)]
    np.testing.assert_allclose(seg.predict_proba(image), (members[0] + members[1]) / 2, atol=2e-6)


def test_same_mode_members_of_different_depth_tile_with_the_deepest_stride(tmp_path):
    a = make_checkpoint(tmp_path / "a.pt", depth=2, padding="same")
    b = make_checkpoint(tmp_path / "b.pt", depth=3, padding="same", seed=1)
    seg = load_segmenter([a, b], InferenceOptions(tile=36, **CPU))  # 36 is no multiple of 4: tiles of 32
    assert seg.config.depth == 3 and seg.predict_proba(noise((50, 41))[:, :, None]).shape == (2, 50, 41)


@pytest.mark.parametrize("other,message", [
    (dict(num_classes=3), r"b\.pt predicts the classes c0, c1, c2, but .*a\.pt predicts c0, c1; ensemble models trained on the same classes"),
    (dict(in_channels=3), r"b\.pt takes 3 input channel\(s\), but .*a\.pt takes 1; ensemble models trained on images of the same channels"),
    (dict(depth=2), r"b\.pt has depth 2, but .*a\.pt has depth 3 \(in valid mode another context .*\); ensemble valid-mode models of one --depth"),
    (dict(padding="same"), r"b\.pt has padding 'same', but .*a\.pt has 'valid'; ensemble models of one padding mode"),
])
def test_members_that_cannot_be_averaged_are_refused(tmp_path, other, message):
    a = make_checkpoint(tmp_path / "a.pt")
    b = make_checkpoint(tmp_path / "b.pt", **other)
    with pytest.raises(UnetkitError, match=message):
        load_segmenter([a, b], InferenceOptions(**CPU))


def test_other_class_names_or_target_are_refused(two):
    a, b = two
    ckpt = load_checkpoint(b)
    save_checkpoint(b, ckpt["model"], {**ckpt["meta"], "classes": ["c1", "c0"]})
    with pytest.raises(UnetkitError, match=r"b\.pt predicts the classes c1, c0, but .*a\.pt predicts c0, c1"):
        load_segmenter([a, b], InferenceOptions(**CPU))
    save_checkpoint(b, ckpt["model"], {**ckpt["meta"], "target": "instances"})
    with pytest.raises(UnetkitError, match=r"b\.pt was trained with --target instances, but .*a\.pt with --target semantic"):
        load_segmenter([a, b], InferenceOptions(**CPU))


def test_ensemble_folder_and_its_yaml(two, tmp_path):
    a, b = two
    folder = tmp_path / "ens"
    (folder / "m").mkdir(parents=True)
    for m in (a, b):
        (folder / "m" / m.name).write_bytes(m.read_bytes())
    write_manifest(folder / MANIFEST, ["m/a.pt", "m/b.pt"], ["c0", "c1"])
    text = (folder / MANIFEST).read_text()
    assert text.startswith("# A unetkit ensemble") and yaml.safe_load(text) == {
        "kind": "unetkit-ensemble", "version": 1, "members": ["m/a.pt", "m/b.pt"], "classes": ["c0", "c1"]}
    for given in (folder, folder / MANIFEST, str(folder)):
        seg = load_segmenter(given, InferenceOptions(**CPU))
        assert seg.meta["ensemble"] == [str(folder / "m" / "a.pt"), str(folder / "m" / "b.pt")]
    assert model_sources(folder) == [folder / MANIFEST, folder / "m" / "a.pt", folder / "m" / "b.pt"]
    both = load_segmenter([folder, a], InferenceOptions(**CPU))  # flattened: every model counts once
    assert len(both.meta["ensemble"]) == 3


@pytest.mark.parametrize("content,message", [
    ("kind: unetkit-ensemble\nmembers: [m/a.pt, m/gone.pt]\n", r"member m/gone\.pt is not found .*; restore it, or remove it from members"),
    ("kind: unetkit-ensemble\nmembers: [m/a.pt]\nclases: [c0, c1]\n", "unknown key 'clases'; did you mean 'classes'"),
    ("kind: unetkit-ensemble\nmembers: []\n", "members is \\[\\]; expected a list of model files"),
    ("members: [m/a.pt]\n", "not an ensemble file .*kind: unetkit-ensemble"),
    ("kind: unetkit-ensemble\nmembers: !!python/object/apply:os.system [echo hi]\n", "not valid YAML"),
    ("kind: unetkit-ensemble\nmembers: [m/a.pt, m/b.pt]\nclasses: [cell, background]\n",
     r"lists the classes cell, background but its members predict c0, c1; correct its classes"),
])
def test_bad_ensemble_files_are_refused_naming_the_file(two, tmp_path, content, message):
    folder = tmp_path / "ens"
    (folder / "m").mkdir(parents=True)
    for m in two:
        (folder / "m" / m.name).write_bytes(m.read_bytes())
    (folder / MANIFEST).write_text(content)
    with pytest.raises(UnetkitError, match=message) as error:
        load_segmenter(folder, InferenceOptions(**CPU))
    assert str(folder / MANIFEST) in str(error.value) and "\n" not in str(error.value)


def test_a_folder_without_ensemble_file_says_what_to_pass(tmp_path):
    with pytest.raises(UnetkitError, match=r"a folder, not a checkpoint, and it holds no ensemble\.yaml; pass the best\.pt \(or last\.pt\) file in a run folder, or a folder that unetkit train --folds finished"):
        load_segmenter(tmp_path, InferenceOptions(**CPU))
    with pytest.raises(UnetkitError, match="ensemble file not found"):
        read_manifest(tmp_path / "nothing.yaml")


def test_cli_predict_and_evaluate_with_two_models(two, tiny_data, tmp_path, capsys):
    a, b = two
    (tmp_path / "in").mkdir()
    image = noise((37, 50))
    Image.fromarray(image).save(tmp_path / "in" / "x.png")
    out = tmp_path / "preds"
    assert main(["predict", "--model", f"{a},{b}", str(tmp_path / "in"), "--out", str(out), "--probabilities", "--no-progress"]) == 0
    prob = tifffile.imread(out / "x_prob.tif")
    expected = sum(load_segmenter(m, InferenceOptions(**CPU)).predict_proba(image[:, :, None]) for m in (a, b)) / 2
    np.testing.assert_allclose(prob, expected, atol=2e-6)
    np.testing.assert_array_equal(np.asarray(Image.open(out / "x.png")), expected.argmax(0))
    scores = tmp_path / "s.json"
    assert main(["evaluate", "--model", f"{a},{b}", "--data", str(tiny_data), "--json-path", str(scores), "--no-progress"]) == 0
    assert 0 <= json.loads(scores.read_text())["dice"]["mean"] <= 1

    (tmp_path / "o").mkdir()
    member = tmp_path / "o" / "x.png"  # a checkpoint where a mask would go: outputs never replace a member, even with --overwrite
    member.write_bytes(b.read_bytes())
    assert main(["predict", "--model", f"{a},{member}", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--overwrite", "--no-progress"]) == 2
    assert f"{member} would overwrite the input" in capsys.readouterr().err
    assert load_checkpoint(member)["meta"]["classes"] == ["c0", "c1"]
