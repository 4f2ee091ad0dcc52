"""The graph's calibrated score as a function of its logit z, and back.

The trainer's calibration (trainer/calibration.py) ends every graph with squash(z): the logistic
sigmoid up to the `critical` level 0.9 (z = ln 9), and beyond it the hyperbola
1 − 1 / (TAIL_SLOPE z + TAIL_OFFSET), which keeps windows far past the threshold apart where a
sigmoid would tie them at 1.0. The agent's stream layer works on z, so it inverts the score
with `logit_of_score`; the constants live here, where both sides read them.
"""

from __future__ import annotations

import math

KNEE_SCORE = 0.9
KNEE_LOGIT = math.log(KNEE_SCORE / (1.0 - KNEE_SCORE))  # ln 9
TAIL_SLOPE = 9.0  # the sigmoid's slope at 0.9 is 0.09 = TAIL_SLOPE / 10²: the tail joins smoothly
TAIL_OFFSET = 10.0 - TAIL_SLOPE * KNEE_LOGIT


def logit_of_score(score: float) -> float:
    """The z whose calibrated score is `score`, for 0 < score < 1: the logit up to 0.9, the
    hyperbola's inverse beyond (continuous at 0.9, where both give ln 9)."""
    if score <= KNEE_SCORE:
        return math.log(score / (1.0 - score))
    return (1.0 / (1.0 - score) - TAIL_OFFSET) / TAIL_SLOPE
