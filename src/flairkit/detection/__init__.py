"""Zone detection: land-cover maps of orthophotos of any size (``flair detect``)."""

from flairkit.detection.run import DetectionSummary, MapSummary, detect, print_summary

__all__ = ["DetectionSummary", "MapSummary", "detect", "print_summary"]
