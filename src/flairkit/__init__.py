"""flairkit: land-cover mapping from aerial and satellite imagery, after IGN's FLAIR system."""

__version__ = "0.1.0"
