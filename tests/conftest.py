"""Shared fixtures: a tiny generated data set, and the location of the real data sets."""

from pathlib import Path

import pytest

from unetkit.data.synthetic import make_dataset

SHARED_DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()


def shared_data(name: str) -> Path:
    """Path of a real data set in ../shared/data, or skip the test when it is absent."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {path} not present")
    return path


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """Six 64x48 / 40x72 synthetic cell images with binary 0/255 masks."""
    return make_dataset(tmp_path_factory.mktemp("tiny"), 6, [(64, 48), (40, 72)], seed=3)


TINY_MODEL = dict(base_channels=4, depth=3, patch_size=24, batch_size=2, tile=64, progress=False, report=False)
