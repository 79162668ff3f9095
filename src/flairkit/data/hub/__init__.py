"""FLAIR-HUB (IGNF/FLAIR-HUB, 2025) in flairkit: its distributed layout, series, elevation, dataset and checks.

One module per concept: :mod:`~flairkit.data.hub.layout` (folders, patch ids, split CSVs, GLOBAL_ALL_MTD
GeoPackages), :mod:`~flairkit.data.hub.sentinel` (dates, cloud and snow filtering, monthly means),
:mod:`~flairkit.data.hub.elevation` (DEM_ELEV channels), :mod:`~flairkit.data.hub.dataset` (a torch dataset
over any subset of modalities and its collate), :mod:`~flairkit.data.hub.check` (``flair data check``),
:mod:`~flairkit.data.hub.aerial` (aerial patches and COSIA labels for ``flair train`` and ``flair evaluate``),
:mod:`~flairkit.data.hub.multimodal` (the data module and task classes of the multimodal network) and
:mod:`~flairkit.data.hub.tiles` (every modality read per tile by ``flair detect``); the
synthetic FLAIR-HUB world is :mod:`flairkit.synth.hub` (``flair data synth --layout hub``).
"""
