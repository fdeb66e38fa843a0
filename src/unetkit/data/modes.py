"""The vocabulary of data options, without the code that implements them (so options and the CLI stay light).

``MASK_MODES``: how mask files encode classes; ``TARGETS``: what a network learns from them.
"""

MASK_MODES = ("auto", "index", "binary", "color", "instances")
TARGETS = ("semantic", "instances")
