"""unetkit: U-Net semantic segmentation, faithful to Ronneberger et al. (2015), fast on a CPU.

The public API::

    import unetkit
    print(unetkit.plan("data/", time=10)["options"])  # what train would choose, and why (["reasons"])
    result = unetkit.train(data="data/", out="runs/exp1", time=10)
    seg = unetkit.load("runs/exp1/best.pt")
    unetkit.predict("runs/exp1/best.pt", ["big_image.tif"], out="preds/")
    scores = unetkit.evaluate(model="runs/exp1/best.pt", data="data/")
    unetkit.export("runs/exp1/best.pt", "model.onnx")
    unetkit.serve("model.onnx", port=8000)
    search = unetkit.tune(data="data/", trials=12, time=60, out="runs/tune")
    table = unetkit.runs("runs", sort="dice")

Names are loaded on first use (PEP 562), so ``import unetkit`` and ``unetkit --help`` do not import
PyTorch; ``unetkit.train`` and the others import what they need when first touched.
"""

import importlib

from unetkit.errors import UnetkitError
from unetkit.version import __version__

# public name -> the module that defines it
_HOMES = {
    "train": "unetkit.api", "load": "unetkit.api", "predict": "unetkit.api", "evaluate": "unetkit.evaluation",
    "check": "unetkit.api", "plan": "unetkit.api", "export": "unetkit.api", "serve": "unetkit.api",
    "tune": "unetkit.tuning", "runs": "unetkit.runlist", "recipe": "unetkit.recipes",
    "UNet": "unetkit.models.unet", "ModelConfig": "unetkit.models.config",
}

__all__ = ["UNet", "ModelConfig", "UnetkitError", "train", "load", "predict", "evaluate", "check", "plan", "export", "serve", "recipe",
           "tune", "runs", "__version__"]


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'unetkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
