"""Test-time augmentation and the uncertainty map: exact averages on hand-made tile functions, the transform
set read from training, tiled == whole-image in valid mode, streamed == in memory, and every command."""

import json

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

import unetkit
from unetkit.cli import main
from unetkit.commands import Limits
from unetkit.config import TrainConfig
from unetkit.engine.checkpoint import load_checkpoint, save_checkpoint
from unetkit.inference.options import InferenceOptions
from unetkit.inference.predictor import tiled_logits
from unetkit.inference.stream import predict_stream
from unetkit.inference.tiling import mirror_pad, plan_axis
from unetkit.inference.tta import DIHEDRAL, HFLIP, TTAForward, apply_transform, invert_transform, softmax, tta_transforms, uncertainty_map
from unetkit.loading import load_segmenter
from unetkit.models.config import ModelConfig
from unetkit.models.unet import unet_from_weights

from tests.inference.test_stream import make_checkpoint, noise

CPU = dict(device="cpu", precision="fp32")


class RampForward:
    """A tile function that is not flip- or rotation-invariant: class 0's logit is the running sum of the
    pixels along each row, class 1's is 0. It counts its calls."""

    config = ModelConfig(in_channels=1, num_classes=2, depth=1, padding="same")

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:  # (B, 1, h, w) -> (B, 2, h, w)
        self.calls += 1
        c0 = np.cumsum(x[:, 0], axis=-1)
        return np.stack([c0, np.zeros_like(c0)], axis=1).astype(np.float32)


def sigmoid(v):
    return 1 / (1 + np.exp(-np.asarray(v, np.float64)))


def test_transforms_are_the_dihedral_group_and_invert():
    x = np.arange(2 * 3 * 5, dtype=np.float32).reshape(1, 2, 3, 5)  # non-square
    seen = set()
    for t in DIHEDRAL:
        y = apply_transform(x, t)
        assert y.shape in ((1, 2, 3, 5), (1, 2, 5, 3))
        np.testing.assert_array_equal(invert_transform(y, t), x)
        seen.add(y.tobytes() + bytes(y.shape))
    assert len(seen) == 8 and DIHEDRAL[0] == (0, False) and HFLIP == ((0, False), (0, True))


def test_hflip_average_by_hand():
    # one 1x2 tile [a, b]: identity gives class-0 logits [a, a+b]; the flipped tile [b, a] gives [b, a+b], back: [a+b, b]
    a, b = 0.5, -2.0
    inner = RampForward()
    out = TTAForward(inner, HFLIP)(np.array([[[[a, b]]]], np.float32))
    assert out.shape == (1, 2, 1, 2) and out.dtype == np.float32 and inner.calls == 2
    expected0 = [(sigmoid(a) + sigmoid(a + b)) / 2, (sigmoid(a + b) + sigmoid(b)) / 2]
    np.testing.assert_allclose(softmax(out[0])[0, 0], expected0, rtol=1e-6)
    np.testing.assert_allclose(np.exp(out[0]).sum(0), 1.0, rtol=1e-6)  # log of probabilities


def test_dihedral_average_equals_the_eight_passes_mapped_back():
    x = np.random.default_rng(0).normal(size=(3, 1, 4, 6)).astype(np.float32)  # non-square tiles
    inner = RampForward()
    out = TTAForward(inner, DIHEDRAL)(x)
    pairs = [  # (transform, its inverse), written out independently of the module
        (lambda v: v, lambda v: v),
        (lambda v: np.rot90(v, 1, (2, 3)), lambda v: np.rot90(v, 3, (2, 3))),
        (lambda v: v[:, :, ::-1, ::-1], lambda v: v[:, :, ::-1, ::-1]),
        (lambda v: np.rot90(v, 3, (2, 3)), lambda v: np.rot90(v, 1, (2, 3))),
        (lambda v: v[..., ::-1], lambda v: v[..., ::-1]),
        (lambda v: v[:, :, ::-1], lambda v: v[:, :, ::-1]),
        (lambda v: v.transpose(0, 1, 3, 2), lambda v: v.transpose(0, 1, 3, 2)),
        (lambda v: v[:, :, ::-1, ::-1].transpose(0, 1, 3, 2), lambda v: v.transpose(0, 1, 3, 2)[:, :, ::-1, ::-1]),
    ]
    probe = RampForward()
    expected = np.mean([back(np.stack([softmax(y) for y in probe(np.ascontiguousarray(go(x)))])) for go, back in pairs], axis=0)
    assert inner.calls == 8 and out.shape == (3, 2, 4, 6)
    np.testing.assert_allclose(np.stack([softmax(y) for y in out]), expected, rtol=1e-5, atol=1e-7)
    plain = np.stack([softmax(y) for y in RampForward()(x)])
    assert np.abs(plain - expected).max() > 0.05  # the model is not invariant: TTA changes the answer


def test_non_finite_logits_stay_non_finite():
    inner = RampForward()
    x = np.array([[[[np.inf, 1.0]]]], np.float32)
    assert not np.isfinite(TTAForward(inner, HFLIP)(x)).all()  # so prediction still refuses the overflow


def test_transform_set_follows_training():
    def meta(**options):
        return {"train_config": TrainConfig(data="d", **options).to_dict()}

    assert tta_transforms(meta(augment="none", hflip=True, flip_rotate=False)) == HFLIP
    assert tta_transforms(meta(augment="light", hflip=True, flip_rotate=False)) == HFLIP
    assert tta_transforms(meta(augment="light", hflip=True)) == DIHEDRAL  # flip_rotate includes the flip
    assert tta_transforms(meta(augment="paper")) == DIHEDRAL
    assert tta_transforms(meta(augment="none")) == DIHEDRAL
    assert tta_transforms({}) == DIHEDRAL  # e.g. an exported file without the training config
    assert tta_transforms({"train_config": {"augment": "unknown-preset"}}) == DIHEDRAL


def hflip_checkpoint(path):
    make_checkpoint(path)
    ckpt = load_checkpoint(path)
    meta = {**ckpt["meta"], "train_config": TrainConfig(data="d", augment="none", hflip=True).to_dict()}
    save_checkpoint(path, ckpt["model"], meta)
    return path


def test_loaded_models_get_the_set_of_their_training(tmp_path):
    plain = load_segmenter(make_checkpoint(tmp_path / "m.pt"), InferenceOptions(**CPU))
    assert not isinstance(plain.forward, TTAForward)
    seg = unetkit.load(tmp_path / "m.pt", tta=True, **CPU)
    assert isinstance(seg.forward, TTAForward) and seg.forward.transforms == DIHEDRAL and seg.model is not None
    seg = load_segmenter(hflip_checkpoint(tmp_path / "h.pt"), InferenceOptions(tta=True, **CPU))
    assert seg.forward.transforms == HFLIP


def whole_image_tta(ckpt, image, transforms):
    """TTA of one forward pass over the whole mirrored image, cropped: written with the model, not the tiler."""
    ck = load_checkpoint(ckpt)
    net = unet_from_weights(ck["meta"]["model"], ck["model"], str(ckpt)).eval()
    norm = ck["meta"]["normalization"]
    x = (image.astype(np.float32) - norm["mean"][0]) / norm["std"][0]  # (H, W)
    rows, cols = (plan_axis(n, 10_000, net.config.depth, "valid") for n in image.shape)
    padded = mirror_pad(x[None, None], (rows.pad_before, rows.pad_after), (cols.pad_before, cols.pad_after))
    total = 0
    for t in transforms:
        with torch.inference_mode():
            y = net(torch.from_numpy(np.ascontiguousarray(apply_transform(padded, t)))).numpy()
        total = total + invert_transform(softmax(y[0])[None], t)[0]
    return (total / len(transforms))[:, : image.shape[0], : image.shape[1]]


@pytest.mark.parametrize("shape,tile", [((121, 97), 76), ((37, 130), 92)])  # non-square tiles: 72x76, 80x84
def test_tiled_valid_tta_equals_whole_image_tta(tmp_path, shape, tile):
    ckpt = make_checkpoint(tmp_path / "m.pt")
    image = noise(shape)
    seg = load_segmenter(ckpt, InferenceOptions(tta=True, tile=tile, batch_size=3, **CPU))
    rows, cols = (plan_axis(n, tile, seg.config.depth, "valid") for n in shape)
    assert len(rows.starts) * len(cols.starts) > 2  # really tiled
    tiled = seg.predict_proba(image[:, :, None])
    one_tile = load_segmenter(ckpt, InferenceOptions(tta=True, tile=4096, **CPU)).predict_proba(image[:, :, None])
    np.testing.assert_allclose(tiled, one_tile, atol=2e-6)
    np.testing.assert_allclose(tiled, whole_image_tta(ckpt, image, DIHEDRAL), atol=2e-6)
    plain = softmax(tiled_logits(seg.model, image[None].astype(np.float32), tile, device=torch.device("cpu")))
    assert not np.allclose(plain, tiled, atol=1e-3)


@pytest.mark.parametrize("padding,tile,shape", [("valid", 76, (121, 97)), ("same", 32, (75, 130))])
def test_streamed_tta_equals_in_memory_with_uncertainty(tmp_path, padding, tile, shape):
    ckpt = make_checkpoint(tmp_path / "m.pt", num_classes=3, padding=padding)
    seg = load_segmenter(ckpt, InferenceOptions(tta=True, tile=tile, batch_size=3, **CPU))
    image = noise(shape)
    tifffile.imwrite(tmp_path / "in.tif", image, tile=(64, 64))
    probs = seg.predict_proba(image[:, :, None])
    written = predict_stream(seg, tmp_path / "in.tif", tmp_path / "out.tif", probabilities=True, progress=False, uncertainty=True)
    assert written == [tmp_path / "out.tif", tmp_path / "out_prob.tif", tmp_path / "out_uncertainty.tif"]
    assert tifffile.imread(tmp_path / "out.tif").tobytes() == probs.argmax(0).astype(np.uint8).tobytes()
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out_prob.tif"), probs.transpose(1, 2, 0))
    unc = tifffile.imread(tmp_path / "out_uncertainty.tif")
    assert unc.shape == shape and unc.dtype == np.float32
    np.testing.assert_array_equal(unc, uncertainty_map(probs))


def test_uncertainty_map_by_hand():
    probs = np.array([[[1.0, 0.5, 0.25]], [[0.0, 0.5, 0.25]], [[0.0, 0.0, 0.5]]])  # K=3
    expected = [0.0, np.log(2) / np.log(3), (2 * 0.25 * np.log(4) + 0.5 * np.log(2)) / np.log(3)]
    np.testing.assert_allclose(uncertainty_map(probs)[0], expected, rtol=1e-6)
    assert uncertainty_map(np.full((4, 2, 2), 0.25)).tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_cli_predict_tta_and_uncertainty(tmp_path, capsys):
    ckpt = hflip_checkpoint(tmp_path / "m.pt")
    (tmp_path / "in").mkdir()
    image = noise((50, 70))
    Image.fromarray(image).save(tmp_path / "in" / "a.png")
    args = ["predict", "--model", str(ckpt), str(tmp_path / "in"), "--tile", "92", "--device", "cpu", "--no-progress", "--probabilities"]
    assert main([*args, "--out", str(tmp_path / "tta"), "--tta", "--uncertainty"]) == 0
    assert main([*args, "--out", str(tmp_path / "plain"), "--uncertainty"]) == 0
    assert sorted(p.name for p in (tmp_path / "tta").iterdir()) == ["a.png", "a_prob.tif", "a_uncertainty.tif"]
    probs = tifffile.imread(tmp_path / "tta" / "a_prob.tif")
    expected = load_segmenter(ckpt, InferenceOptions(tta=True, tile=92, **CPU))
    assert expected.forward.transforms == HFLIP
    np.testing.assert_allclose(probs, expected.predict_proba(image[:, :, None]), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "tta" / "a.png")), probs.argmax(0))
    unc = tifffile.imread(tmp_path / "tta" / "a_uncertainty.tif")
    assert unc.shape == (50, 70) and unc.dtype == np.float32 and 0 <= unc.min() and unc.max() <= 1
    np.testing.assert_allclose(unc, uncertainty_map(probs), atol=1e-6)
    assert not np.allclose(tifffile.imread(tmp_path / "plain" / "a_prob.tif"), probs, atol=1e-4)
    # the uncertainty file goes through output planning: an existing one is not replaced silently
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "a_uncertainty.tif").write_bytes(b"mine")
    assert main([*args, "--out", str(tmp_path / "again"), "--uncertainty"]) == 2
    assert "a_uncertainty.tif already exists" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == ["a_uncertainty.tif"]


def test_cli_evaluate_tta_agrees_with_predicted_masks(tmp_path, tiny_data):
    ckpt = make_checkpoint(tmp_path / "m.pt", seed=3)
    common = ["--model", str(ckpt), "--tile", "92", "--device", "cpu", "--no-progress", "--tta"]
    assert main(["evaluate", *common, "--data", str(tiny_data), "--json-path", str(tmp_path / "a.json"), "--metrics", "pixel"]) == 0
    assert main(["predict", *common, str(tiny_data / "images"), "--out", str(tmp_path / "preds")]) == 0
    assert main(["evaluate", "--pred", str(tmp_path / "preds"), "--truth", str(tiny_data / "masks"), "--json-path", str(tmp_path / "b.json"), "--metrics", "pixel"]) == 0
    a, b = json.loads((tmp_path / "a.json").read_text()), json.loads((tmp_path / "b.json").read_text())
    for key in ("dice", "iou"):  # the class names differ (the checkpoint's, the truth folder's), not the scores
        assert list(a[key].values()) == list(b[key].values())


def test_serve_runs_tta_and_answers_the_uncertainty(tmp_path, monkeypatch):
    from unetkit.server import app
    from unetkit.server.core import segment

    served = {}
    monkeypatch.setattr(app, "run_server", lambda seg, limits, host, port, name: served.update(seg=seg))
    ckpt = make_checkpoint(tmp_path / "m.pt")
    assert main(["serve", "--model", str(ckpt), "--tta", "--device", "cpu", "--tile", "92"]) == 0
    seg = served["seg"]
    assert seg.options.tta and isinstance(seg.forward, TTAForward)
    image = noise((30, 41))
    kind, body = segment(seg, tifffile_bytes(tmp_path, image), "x.tif", "image/tiff", Limits(), "json", False)
    assert kind == "application/json"
    assert body["uncertainty"] == pytest.approx(float(uncertainty_map(seg.predict_proba(image[:, :, None])).mean()), abs=1e-6)
    assert 0 < body["uncertainty"] < 1


def tifffile_bytes(tmp_path, image):
    tifffile.imwrite(tmp_path / "x.tif", image)
    return (tmp_path / "x.tif").read_bytes()


def test_onnx_model_runs_tta_like_the_checkpoint(tmp_path):
    pytest.importorskip("onnxruntime")
    ckpt = make_checkpoint(tmp_path / "m.pt")
    unetkit.export(ckpt, tmp_path / "m.onnx", tile=92)
    image = noise((70, 50))[:, :, None]
    onnx = unetkit.load(tmp_path / "m.onnx", tta=True, tile=92)
    assert isinstance(onnx.forward, TTAForward) and onnx.forward.transforms == DIHEDRAL
    torch_probs = unetkit.load(ckpt, tta=True, tile=92, **CPU).predict_proba(image)
    np.testing.assert_allclose(onnx.predict_proba(image), torch_probs, atol=1e-4)
