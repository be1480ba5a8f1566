"""lungcls: lung segmentation and COVID-19 / Non-COVID / Normal classification of chest X-rays.

A research tool, not a diagnostic device.
"""

from .errors import CheckpointError, ConfigError, DataError, ImageReadError, LungclsError
from .version import __version__

__all__ = ["CheckpointError", "ConfigError", "DataError", "ImageReadError", "LungclsError", "Pipeline", "__version__"]


def __getattr__(name: str):
    # Pipeline pulls in torch and the models; import it only when asked for
    if name == "Pipeline":
        from .pipeline import Pipeline

        return Pipeline
    raise AttributeError(f"module 'lungcls' has no attribute {name!r}")
