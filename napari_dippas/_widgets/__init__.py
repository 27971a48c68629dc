"""The dock widgets (Qt lives here and in ``_workers``, nowhere else in the package)."""

from __future__ import annotations

from ._anonymize import AnonymizeWidget
from ._assemble import AssembleWidget
from ._attribution import AttributionWidget
from ._fingerprint import FingerprintWidget

__all__ = ["AnonymizeWidget", "AssembleWidget", "AttributionWidget", "FingerprintWidget"]
