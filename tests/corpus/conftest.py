"""Fixtures shared by the corpus: small trained models to predict, evaluate, export and serve with."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unetkit.cli import main
from unetkit.data.synthetic import synthetic_cells

from tests.conftest import TINY_MODEL
from tests.corpus.kit import flags


@pytest.fixture(scope="session")
def models(tiny_data, tmp_path_factory) -> dict[str, Path]:
    """A 1-channel model and a 3-channel model, trained for two steps each (their ``best.pt``)."""
    root = tmp_path_factory.mktemp("models")
    assert main(["train", "--data", str(tiny_data), "--out", str(root / "gray"), "--epochs", "1", "--steps-per-epoch", "2", *flags(TINY_MODEL)]) == 0
    rgb = root / "rgbdata"
    for sub in ("images", "masks"):
        (rgb / sub).mkdir(parents=True)
    for i in range(3):
        image, mask = synthetic_cells((40, 40), np.random.default_rng(i))
        Image.fromarray(np.stack([image] * 3, -1)).save(rgb / "images" / f"{i}.png")
        Image.fromarray(mask).save(rgb / "masks" / f"{i}.png")
    assert main(["train", "--data", str(rgb), "--out", str(root / "rgb"), "--epochs", "1", "--steps-per-epoch", "1", *flags(TINY_MODEL)]) == 0
    return {"gray": root / "gray" / "best.pt", "rgb": root / "rgb" / "best.pt"}
