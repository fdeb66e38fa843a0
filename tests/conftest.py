"""Shared fixtures: a tiny generated data set, and the location of the real data sets.

Under pytest-xdist (``pytest -n N``) the workers share the machine's cores: each worker, and every process
its tests start (the CLI, servers, torchrun, Dask workers), runs ``cores // N`` threads (1 on 2 cores with
``-n 2``) unless ``OMP_NUM_THREADS`` says otherwise. Each test gets back the torch thread count it started
with, whatever it set, and ``$UNETKIT_CACHE`` points into the session's temporary folder, never ~/.cache.
"""

import os
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):  # before torch is imported, so that it and child processes take it
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _cores // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))))

import pytest
import torch

from unetkit.data.synthetic import make_dataset

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

SHARED_DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()


def shared_data(name: str) -> Path:
    """Path of a real data set in ../shared/data, or skip the test when it is absent."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {path} not present")
    return path


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """A test that sets torch's thread count (``torch.set_num_threads``, ``threads=``) does so for itself only."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def _private_unetkit_cache(tmp_path_factory):
    """--backend onnxruntime and --int8 cache their files under $UNETKIT_CACHE: one folder per session (per
    xdist worker), never the user's ~/.cache/unetkit. Tests that check the cache set their own."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UNETKIT_CACHE", str(tmp_path_factory.mktemp("unetkit-cache")))
        yield


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """Six 64x48 / 40x72 synthetic cell images with binary 0/255 masks."""
    return make_dataset(tmp_path_factory.mktemp("tiny"), 6, [(64, 48), (40, 72)], seed=3)


TINY_MODEL = dict(model_size="cpu", base_channels=4, depth=3, patch_size=24, batch_size=2, tile=64, progress=False, report=False)
