"""napari-dippas: the DIPPAS workflow (fingerprint, attribution, anonymization, export) in napari.

The science lives in :mod:`dippas_core`; this package only turns it into napari contributions
(reader, writer, sample data, four dock widgets).  Qt is imported only by the private
``_widgets`` and ``_workers`` modules, so the models in :mod:`napari_dippas._models`, the layer
helpers in :mod:`napari_dippas._layers` and the layer updates in :mod:`napari_dippas._layer_updates`
can be used and tested without a display.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
