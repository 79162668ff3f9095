"""Your own data as a FLAIR-layout dataset: orthophotos and labels (a raster, or polygons) cut into patches."""

from flairkit.data.patches.build import PatchOptions, PatchSummary, make_patches

__all__ = ["PatchOptions", "PatchSummary", "make_patches"]
