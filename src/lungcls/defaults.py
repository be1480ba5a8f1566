"""One home for every default that more than one module uses. Where a model is loaded, its own saved
values win (a classifier's crop margin, its class names, its working size); these are the values used
when there is no model to ask.
"""

from __future__ import annotations

#: the side, in pixels, at which images are read, cached, segmented and cropped (square; COVID-QU-Ex's size)
WORKING_SIZE = 256

#: the COVID-QU-Ex classes: the default class set, in output order
CLASS_NAMES: tuple[str, ...] = ("COVID-19", "Non-COVID", "Normal")

#: crop margin around the lungs' bounding box, a fraction of the box's size on each side
CROP_MARGIN = 0.1

#: the smallest image accepted, in pixels on each side (a smaller picture holds no lung fields to find)
MIN_IMAGE_SIDE = 32

#: the calibration temperatures searched on Val; a fit at the upper end means the logits carry little information
TEMPERATURE_BOUNDS = (0.05, 20.0)

#: the largest image accepted, in pixels (a 4,300 x 3,500 CXR is 15 M; the limit leaves room)
MAX_PIXELS = 100_000_000
