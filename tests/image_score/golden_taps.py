"""Hand-made activations with hand-computed references and scores (paper B, docs/papers.md §B2–B3),
shared by the image-score tests."""
from __future__ import annotations

import math

import numpy as np

# Hand-made activations: 2 classes, tap "a" of 4 units, tap "b" of 2 units.
#   class 0 images: a = [2,0,1,0], [0,0,1,0] -> mean [1,0,1,0], t = 0.5, M = [1,0,1,0]
#                   b = [-1,-3], [-3,-1]     -> mean [-2,-2], t = -1, M = [] (empty)
#   class 1 image:  a = [0,4,0,0]            -> mean [0,4,0,0], t = 2,   M = [0,1,0,0]
#                   b = [1, 0.5]             -> mean [1,0.5],  t = 0.5, M = [1,1] (0.5 >= 0.5)
# Scored images:
#   I0 (class 0): a = [0.5,9,0,0] -> M_I = [1,1,0,0] (0.5 at the threshold counts),
#                 |∧| = 1, |M_I| = 2, |M| = 2;  b = [-1,0] -> M_I = [1,1], |∧| = 0, |M| = 0
#   I1 (class 1): a = [0,2,0,5] -> M_I = [0,1,0,1], |∧| = 1, |M_I| = 2, |M| = 1;
#                 b = [0.5,0.4] -> M_I = [1,0], |∧| = 1, |M_I| = 1, |M| = 2
REF_TAPS = {
    "a": np.array([[2, 0, 1, 0], [0, 0, 1, 0], [0, 4, 0, 0]], np.float32),
    "b": np.array([[-1, -3], [-3, -1], [1, 0.5]], np.float32),
}
REF_LABELS = np.array([0, 0, 1])
SCORED_TAPS = {
    "a": np.array([[0.5, 9, 0, 0], [0, 2, 0, 5]], np.float32),
    "b": np.array([[-1, 0], [0.5, 0.4]], np.float32),
}
ASSIGNED = np.array([0, 1])
# With eps = 1, per image (sum over taps a, b):
GOLDEN_EPS1 = {
    "recall": [math.log(2 / 3) + math.log(1 / 1), math.log(2 / 2) + math.log(2 / 3)],
    "jaccard": [math.log(2 / 4) + math.log(1 / 3), math.log(2 / 3) + math.log(2 / 3)],
    "dice": [math.log(3 / 5) + math.log(1 / 3), math.log(3 / 4) + math.log(3 / 4)],
}
