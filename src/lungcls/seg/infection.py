"""Infection per lung: the infected share of each lung, a severity score and grade, and COVID-19 from infection.

The infection segmenter (a :class:`~lungcls.seg.segmenter.Segmenter` with ``target="infection"``) finds the
infection; this module measures it inside the lungs that stage 1 found:

- the lungs are split into the patient's right lung (the image's left half, radiological convention) and left
  lung at the mediastinum: the emptiest column of the lung mask in the central band (30-70% of the width);
- the infected share of each lung is the part of the lung that the infection covers (infection outside the lungs
  is not counted: COVID-QU-Ex's infection masks all lie inside its lung masks);
- each lung gets the extent score of Wong et al. (Radiology 2020, 296:E72): 0 none, 1 under 25%, 2 from 25% to
  50%, 3 from 50% to 75%, 4 above 75%; the two scores add to 0-8. An infected share under :data:`MIN_SHARE` of
  a lung scores 0 (a few pixels are noise, not an infection). COVID-QU-Ex's authors grade severity from the
  infected share too; we could not confirm their thresholds offline, so lungcls uses this published score;
- the grade in words is ours, from the total: ``none`` 0, ``mild`` 1-2 (each lung under half infected, at
  least one under a quarter), ``moderate`` 3-4, ``severe`` 5-8 (at least one lung more than half infected).

No lungs, or no infection, is not an error: zero infection, score 0, grade ``none``, and the flag
``lungs-doubtful`` where stage 1 flagged the lungs (the shares are then measured in doubtful lungs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

#: an infected share of a lung under this counts as none (the built-in model's mean false-positive share of the
#: lungs on images without infection is well under it; see its model card)
MIN_SHARE = 0.01
#: upper bounds of the extent scores 1, 2 and 3 (Wong et al. 2020); above the last, 4
SCORE_BOUNDS = (0.25, 0.50, 0.75)
GRADES = ((0, "none"), (2, "mild"), (4, "moderate"), (8, "severe"))  # (highest total, grade)
FLAG_LUNGS_DOUBTFUL = "lungs-doubtful"


@dataclass
class InfectionResult:
    """One image's infection, measured in its lungs.

    Attributes:
        mask: uint8 (H, W) in {0, 1}, the infection inside the lungs (None where the caller asked for no masks).
        share: infected share of both lungs together; share_right, share_left: of the patient's right lung
            (image left) and left lung (image right); 0 where there is no lung.
        score_right, score_left: extent scores 0-4; score: their sum, 0-8; grade: ``none``, ``mild``,
            ``moderate`` or ``severe`` (see the module's docstring).
        covid: COVID-19 from infection: ``share`` at or above the detector's threshold (None without one).
        flags: ``lungs-doubtful`` where stage 1 flagged the lungs.
    """

    mask: np.ndarray | None
    share: float
    share_right: float
    share_left: float
    score_right: int
    score_left: int
    score: int
    grade: str
    covid: bool | None = None
    flags: list[str] = field(default_factory=list)

    def row(self) -> dict:
        """The CSV columns (``infection_*``) of this result."""
        return {
            "infection_share": round(self.share, 5),
            "infection_share_right_lung": round(self.share_right, 5),
            "infection_share_left_lung": round(self.share_left, 5),
            "infection_score": self.score,
            "infection_grade": self.grade,
            "covid_from_infection": "" if self.covid is None else ("yes" if self.covid else "no"),
        }


#: the CSV columns :meth:`InfectionResult.row` fills
INFECTION_FIELDS = (
    "infection_share",
    "infection_share_right_lung",
    "infection_share_left_lung",
    "infection_score",
    "infection_grade",
    "covid_from_infection",
)


def split_lungs(lungs: torch.Tensor) -> torch.Tensor:
    """The column where each image's lungs divide: the emptiest column of the mask in the central band (30-70% of
    the width), the middle of the band when it is all empty.

    Args:
        lungs: (N, 1, H, W), nonzero is lung.

    Returns:
        int64 (N,): columns left of it belong to the patient's right lung, the others to the left lung.
    """
    w = lungs.shape[-1]
    lo, hi = int(0.3 * w), max(int(0.7 * w), int(0.3 * w) + 1)
    columns = (lungs[:, 0] != 0).sum(dim=1)[:, lo:hi]  # (N, band)
    # the emptiest column; among equally empty ones the one nearest the band's middle
    middle = torch.arange(hi - lo, device=lungs.device) - (hi - lo - 1) / 2
    key = columns.double() * w + middle.abs() / w
    return key.argmin(dim=1) + lo


def score(share: float) -> int:
    """Extent score 0-4 of one lung's infected share (Wong et al. 2020; under :data:`MIN_SHARE`: 0)."""
    if share < MIN_SHARE:
        return 0
    return 1 + sum(share >= b for b in SCORE_BOUNDS)


def grade(total: int) -> str:
    """The grade in words of a total score 0-8."""
    return next(name for top, name in GRADES if total <= top)


def measure(
    infection: torch.Tensor,
    lungs: torch.Tensor,
    lung_flags: list[list[str]] | None = None,
    threshold: float | None = None,
    with_masks: bool = True,
) -> list[InfectionResult]:
    """Infection per lung for a batch, on any device (one copy back of each whole array).

    Args:
        infection, lungs: (N, 1, H, W) in {0, 1}, at the same size.
        lung_flags: stage 1's flags per image (any flag makes the lungs doubtful).
        threshold: the COVID-19-from-infection detector's threshold on ``share`` (None: no decision).
        with_masks: return the infection masks (inside the lungs) as arrays.
    """
    lung = lungs != 0
    inside = (infection != 0) & lung
    n, w = len(lungs), lungs.shape[-1]
    right_side = (torch.arange(w, device=lungs.device)[None, :] < split_lungs(lungs)[:, None])[:, None, None, :]
    areas = (
        torch.stack(
            [
                (lung & right_side).flatten(1).sum(1),
                (lung & ~right_side).flatten(1).sum(1),
                (inside & right_side).flatten(1).sum(1),
                (inside & ~right_side).flatten(1).sum(1),
            ],
            1,
        )
        .cpu()
        .tolist()
    )
    arrays = inside[:, 0].to(torch.uint8).cpu().numpy() if with_masks else [None] * n
    flags = lung_flags or [[] for _ in range(n)]
    out = []
    for (lr, ll, ir, il), m, f in zip(areas, arrays, flags):
        share_r, share_l, share = ir / max(lr, 1), il / max(ll, 1), (ir + il) / max(lr + ll, 1)
        sr, sl = score(share_r), score(share_l)
        out.append(
            InfectionResult(
                m, share, share_r, share_l, sr, sl, sr + sl, grade(sr + sl),
                covid=None if threshold is None else share >= threshold,
                flags=[FLAG_LUNGS_DOUBTFUL] if f else [],
            )
        )  # fmt: skip
    return out
