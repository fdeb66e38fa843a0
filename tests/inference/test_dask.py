"""Scale-out on Dask: a LocalCluster of 2 worker processes writes the same file as the local path."""

import numpy as np
import pytest
import tifffile
import torch
import zarr

from tests.inference.test_stream import make_checkpoint, noise
from unetkit.cli import main
from unetkit.errors import UnetkitError
from unetkit.inference.dask_predict import checkpoint_bytes, connect
from unetkit.inference.options import InferenceOptions
from unetkit.inference.stream import predict_stream
from unetkit.loading import load_segmenter

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as local:
        yield local


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_dask_writes_the_local_file_byte_for_byte(cluster, tmp_path, padding):
    ckpt = make_checkpoint(tmp_path / "m.pt", in_channels=2, num_classes=3, padding=padding)
    seg = load_segmenter(ckpt, InferenceOptions(device="cpu", precision="fp32", tile=188, batch_size=3))
    tifffile.imwrite(tmp_path / "in.tif", noise((610, 450, 2)), tile=(128, 128), photometric="minisblack", planarconfig="contig")
    # The workers run one thread each; on some CPUs oneDNN's float sums depend on the thread count (last-bit
    # differences in the probabilities), so the local pass runs one thread too for a byte-for-byte comparison.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = predict_stream(seg, tmp_path / "in.tif", tmp_path / "local.tif", probabilities=True, pyramid=True, progress=False)
    finally:
        torch.set_num_threads(threads)
    remote = predict_stream(seg, tmp_path / "in.tif", tmp_path / "dask.tif", probabilities=True, pyramid=True,
                            dask=cluster.scheduler_address, progress=False)  # fmt: skip
    assert len(cluster.workers) == 2
    for a, b in zip(local, remote):
        assert a.read_bytes() == b.read_bytes(), f"{b.name} differs from {a.name}"
    predict_stream(seg, tmp_path / "in.tif", tmp_path / "dask.zarr", dask=cluster.scheduler_address, progress=False)
    np.testing.assert_array_equal(zarr.open(str(tmp_path / "dask.zarr"), mode="r")[:], tifffile.imread(local[0]))


def test_cli_starts_a_local_cluster(tmp_path):
    """``--dask-workers 2``: a LocalCluster of 2 worker processes, started and closed by predict."""
    ckpt = make_checkpoint(tmp_path / "m.pt")
    tifffile.imwrite(tmp_path / "in.tif", noise((300, 200)), tile=(64, 64))
    options = ["--model", str(ckpt), str(tmp_path / "in.tif"), "--tile", "124", "--device", "cpu", "--precision", "fp32", "--no-progress"]
    out = tmp_path / "out"  # not beside the input
    assert main(["predict", *options, "--out", str(out / "local.tif")]) == 0
    assert main(["predict", *options, "--out", str(out / "dask.tif"), "--dask-workers", "2"]) == 0
    assert (out / "local.tif").read_bytes() == (out / "dask.tif").read_bytes()


def test_dask_needs_a_pytorch_model_and_workers(tmp_path):
    seg = load_segmenter(make_checkpoint(tmp_path / "m.pt"), InferenceOptions(device="cpu", precision="fp32"))
    assert checkpoint_bytes(seg)[:2] == b"PK"  # a torch zip archive, loadable with weights_only=True
    seg.forward = lambda x: x  # a backend without a PyTorch module (e.g. ONNX Runtime)
    with pytest.raises(UnetkitError, match="--dask runs PyTorch checkpoints"):
        checkpoint_bytes(seg)
    with pytest.raises(UnetkitError, match="--dask-workers 0: expected 1 or more"):
        connect(None, 0)
