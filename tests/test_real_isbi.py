"""Real-data smoke test on ISBI 2012 (the paper's data), skipped when ../shared/data is absent."""

from pathlib import Path

import numpy as np

import unetkit
from unetkit.data.dataset import load_spec
from unetkit.data.io import read_mask_raw

from tests.conftest import shared_data

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "isbi2012" / "dataset.yaml"


def test_example_yaml_splits_by_slice():
    shared_data("isbi2012")
    train = load_spec(EXAMPLE, split="train")
    val = load_spec(EXAMPLE, split="val")
    assert [p.key for p in train.pairs] == [str(i) for i in range(20)]
    assert [p.key for p in val.pairs] == [str(i) for i in range(20, 25)]
    assert train.classes == ["membrane", "cell"]


def test_isbi_train_predict_evaluate(tmp_path):
    data = shared_data("isbi2012")
    result = unetkit.train(
        data=str(EXAMPLE), out=str(tmp_path / "run"), epochs=1, steps_per_epoch=4, base_channels=4, depth=3,
        patch_size=64, batch_size=2, tile=256, progress=False, report=False,
    )
    assert result.best_dice is not None and 0 <= result.best_dice <= 1
    written = unetkit.predict(tmp_path / "run" / "best.pt", [data / "test_images" / "0.png"], tmp_path / "pred", progress=False)
    mask = read_mask_raw(written[0])
    assert mask.shape == (512, 512) and set(np.unique(mask)) <= {0, 1}
    scores = unetkit.evaluate(model=tmp_path / "run" / "best.pt", data=EXAMPLE, split="val", progress=False)
    assert len(scores["per_image"]) == 5 and set(scores["dice"]) == {"membrane", "cell", "mean"}
