"""FLAIR-HUB elevation (DEM_ELEV: band 1 the DSM, band 2 the DTM, metres) as model channels.

IGN describes the model's elevation input as [DSM, DSM - DTM]; its training code computes it when
``calc_elevation`` and ``calc_elevation_stack_dsm`` are on (its default), while its zone detection feeds the
file's [DSM, DTM] as they are. Each is a named mode here (``data.hub.elevation``).
"""

from __future__ import annotations

import numpy as np

from flairkit.errors import DataError

ELEVATION_MODES = {
    "dsm_ndsm": "[DSM, DSM - DTM]: surface and height above ground (IGN's training default)",
    "dsm_dtm": "[DSM, DTM]: the file's bands as they are (IGN's zone detection)",
    "ndsm": "[DSM - DTM]: height above ground only (IGN's calc_elevation without stack_dsm)",
}


def elevation_channels(dem: np.ndarray, mode: str, where: str) -> np.ndarray:
    """The float32 channels of a (2, H, W) DSM, DTM array in ``mode`` (one of :data:`ELEVATION_MODES`)."""
    if mode not in ELEVATION_MODES:
        raise ValueError(f"unknown elevation mode {mode!r}; choose one of {', '.join(ELEVATION_MODES)}")
    if dem.ndim != 3 or dem.shape[0] < 2:
        raise DataError(f"{where}: has {dem.shape[0] if dem.ndim == 3 else 0} band(s), DEM_ELEV needs 2 (DSM, DTM)")
    dsm, dtm = dem[0].astype(np.float32), dem[1].astype(np.float32)
    if mode == "dsm_dtm":
        return np.stack([dsm, dtm])
    if mode == "ndsm":
        return (dsm - dtm)[None]
    return np.stack([dsm, dsm - dtm])
