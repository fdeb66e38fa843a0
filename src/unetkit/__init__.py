"""unetkit: U-Net semantic segmentation, faithful to Ronneberger et al. (2015), fast on a CPU.

The public API::

    import unetkit
    result = unetkit.train(data="data/", out="runs/exp1", time=10)
    seg = unetkit.load("runs/exp1/best.pt")
    unetkit.predict("runs/exp1/best.pt", ["big_image.tif"], out="preds/")
    scores = unetkit.evaluate(model="runs/exp1/best.pt", data="data/")
    unetkit.export("runs/exp1/best.pt", "model.onnx")
    unetkit.serve("model.onnx", port=8000)
    search = unetkit.tune(data="data/", trials=12, time=60, out="runs/tune")
    table = unetkit.runs("runs", sort="dice")
"""

__version__ = "0.1.0"

from unetkit.api import check, evaluate, export, load, predict, runs, serve, train, tune  # noqa: E402
from unetkit.errors import UnetkitError  # noqa: E402
from unetkit.recipes import recipe  # noqa: E402
from unetkit.models.config import ModelConfig  # noqa: E402
from unetkit.models.unet import UNet

__all__ = ["UNet", "ModelConfig", "UnetkitError", "train", "load", "predict", "evaluate", "check", "export", "serve", "recipe", "tune", "runs", "__version__"]
