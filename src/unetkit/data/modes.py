"""The vocabulary of data options, without the code that implements them (so options and the CLI stay light).

``MASK_MODES``: how mask files encode classes; ``TARGETS``: what a network learns from them; ``W0`` and
``SIGMA``: the paper's border weight map.
"""

MASK_MODES = ("auto", "index", "binary", "color", "instances")
TARGETS = ("semantic", "instances")

# The border term of the paper's weight map, Ronneberger et al. 2015, eq. 2: w0 = 10, sigma ~ 5 pixels.
W0 = 10.0
SIGMA = 5.0
