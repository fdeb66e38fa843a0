"""The vocabulary of the training losses, without the code that computes them (so options and the CLI stay light).

``LOSSES``: the loss kinds, each a sum of terms joined by ``+`` (:func:`unetkit.losses.segmentation_loss`);
``FOCAL_GAMMA``, ``TVERSKY_ALPHA`` and ``TVERSKY_BETA``: the defaults of the focal and Tversky terms.
"""

LOSSES = ("ce", "dice", "ce+dice", "weighted-ce", "weighted-ce+dice", "focal", "focal+dice", "tversky", "ce+tversky", "focal+tversky")

# Lin et al. 2017 (focal loss): gamma = 2 worked best; gamma = 0 is plain cross-entropy.
FOCAL_GAMMA = 2.0
# Salehi et al. 2017 (Tversky loss): alpha weighs false positives, beta false negatives; 0.3/0.7 gave their best
# F2, trading precision for the recall of small and thin structures. 0.5/0.5 is soft Dice.
TVERSKY_ALPHA = 0.3
TVERSKY_BETA = 0.7
