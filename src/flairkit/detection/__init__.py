"""Zone detection: land-cover maps of orthophotos of any size (``flair detect``)."""

from flairkit.detection.run import detect
from flairkit.detection.summary import DetectionSummary, MapSummary, print_summary

__all__ = ["DetectionSummary", "MapSummary", "detect", "print_summary"]
