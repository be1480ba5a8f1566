"""Training to a time budget: how many epochs fit in the seconds a run is given.

A run given ``time_budget`` seconds (``--time-budget``) measures itself: after each of its first epochs it
knows what an epoch costs (training and validation) and how fast validation passes images, so it knows
what the end of the run will cost (the final evaluation passes Val and Test, and calibrates). It then
sets its number of epochs, and so the learning-rate schedule, to end inside the budget. ``epochs`` stays
the most it may train. The plan is made after the first epoch and again after the second (the first
carries one-off costs: compilation, cuDNN's autotuning, warm caches). After that it only ever shortens,
when the machine turns slower (another run started beside it). The run always evaluates and saves, also
when its first epoch already ran past the budget.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

#: the end of a run passes each Val and Test image about this many times as validation does (calibration,
#: evaluation with per-image records, a second look at Val): counted on the safe side
FINISH_PASSES = 3.0
#: seconds kept back besides the estimate: writing weights and reports, building plots
FINISH_SECONDS = 3.0
#: share of the budget kept back for what an estimate misses (a slower epoch, a busy disk)
SAFETY = 0.05
#: epochs after which the plan may still grow; later it only shrinks
PLANNING_EPOCHS = 2


@dataclass
class TimeBudget:
    """The seconds a run may take, from the moment it began (``started``, :func:`time.monotonic`).

    Attributes:
        seconds: the budget; started: when the run began; finish_images: the images the end of the run
            evaluates (Val + Test).
    """

    seconds: float
    started: float
    finish_images: int = 0

    def left(self) -> float:
        """Seconds left before the deadline (negative once past it)."""
        return self.started + self.seconds - time.monotonic()

    def finish_cost(self, val_img_s: float) -> float:
        """Estimated seconds of the end of the run: evaluation of Val and Test, saving, a safety share."""
        passes = FINISH_PASSES * self.finish_images / max(val_img_s, 1e-9) if self.finish_images else 0.0
        return passes + FINISH_SECONDS + SAFETY * self.seconds

    def plan(self, done: int, planned: int, most: int, epoch_seconds: float, val_img_s: float) -> int:
        """The number of epochs to train in all, after ``done`` epochs of ``epoch_seconds`` each (the latest).

        Args:
            done: epochs trained; planned: the current plan; most: the cap (the config's ``epochs``).
            epoch_seconds: what the latest epoch cost, training and validation; val_img_s: validation's speed.
        Returns:
            at least ``done`` (stop now), at most ``most``; after :data:`PLANNING_EPOCHS` never more than ``planned``.
        """
        room = self.left() - self.finish_cost(val_img_s)
        more = math.floor(room / epoch_seconds) if epoch_seconds > 0 else most
        epochs = max(done, min(most, done + max(0, more)))
        return epochs if done <= PLANNING_EPOCHS else min(planned, epochs)
