"""auxseg: weakly supervised semantic segmentation pipelines (AuxSegNet, AA/LR losses) tracked with DVC."""

__version__ = "0.1.0"

IGNORE_INDEX = 255
"""Label value of pixels that carry no supervision (VOC object boundaries, uncertain pseudo labels)."""
