"""Zone detection: land-cover maps of orthophotos of any size (``flair detect``)."""

from flairkit.detection.run import detect
from flairkit.detection.summary import DetectionSummary, DetectProgress, MapSummary

__all__ = ["DetectProgress", "DetectionSummary", "MapSummary", "detect"]
