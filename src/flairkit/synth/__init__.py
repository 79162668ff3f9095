"""Synthetic FLAIR worlds: datasets in IGN's exact layouts and formats, generated on the spot.

:mod:`~flairkit.synth.world` writes a FLAIR #2 world (``flair data synth``) from a vector land-cover
layout (:mod:`~flairkit.synth.layout`), its aerial rendering (:mod:`~flairkit.synth.render`) and Sentinel-2
series (:mod:`~flairkit.synth.sentinel`); :mod:`~flairkit.synth.hub` writes a FLAIR-HUB world with the same
machinery (``flair data synth --layout hub``); :mod:`~flairkit.synth.country` writes another country's RGB
orthophotos, polygons of 6 classes, mapping table and nomenclature (``flair data synth --country``). The
generators depend on :mod:`flairkit.data`'s formats, never the reverse.
"""

from flairkit.synth.country import CountryOptions, CountrySummary, synthesize_country
from flairkit.synth.hub import HubSynthOptions, HubSynthSummary, synthesize_hub_world
from flairkit.synth.world import SynthOptions, SynthSummary, synthesize_world

__all__ = [
    "CountryOptions",
    "CountrySummary",
    "HubSynthOptions",
    "HubSynthSummary",
    "SynthOptions",
    "SynthSummary",
    "synthesize_country",
    "synthesize_hub_world",
    "synthesize_world",
]
