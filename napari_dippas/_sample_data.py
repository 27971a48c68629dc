"""Sample data: one click gives a real photo and its camera's fingerprint, no files needed.

The data is a 256×256 crop of a real Dresden Image Database photo (Nikon D70s) and the fingerprint
of that camera estimated from its flat-field shots, cropped at the same place; both ship inside
``dippas_core/data`` (see :func:`dippas_core.sample.sample_data`).  A real camera was preferred to a
synthetic one so that the attribution scores and the anonymization behave as they do in practice
(a real fingerprint is weak and structured, a synthetic one is easy to make too strong).
"""

from __future__ import annotations

from ._layers import LayerDataTuple, fingerprint_layer, photo_layer

__all__ = ["dresden_sample"]


def dresden_sample() -> list[LayerDataTuple]:
    """The ``photo`` and ``fingerprint`` layers of the bundled Dresden sample."""
    from dippas_core.sample import sample_data

    photo, fp = sample_data()
    return [
        photo_layer(photo, "photo", source="Dresden sample", camera=fp.camera),
        fingerprint_layer(
            fp.K, camera=fp.camera, n_images=fp.n_images, sigma=fp.sigma, version=fp.version
        ),
    ]
