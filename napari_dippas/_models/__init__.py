"""Scriptable, evented state behind the dock widgets (no Qt, no napari).

The widgets are thin views: each one edits a settings model and watches a job model.  Everything a
user can do from a widget can be done from a script with these classes, and they are tested without
a display.  Evented models come from :mod:`psygnal` (the event system napari itself uses): every
field has a signal, ``model.events.<field>``.

One module per concept; every public name is re-exported here:

- :mod:`._steps`: the worker-to-GUI step throttle, step summaries, the run's curves;
- :mod:`._job`: the Anonymize settings, the live state of a run;
- :mod:`._scores`: attribution scores, verdicts, the results table;
- :mod:`._provenance`: the forensic record written into a run folder;
- :mod:`._session`: a recorded run opened for assembly.
"""

from __future__ import annotations

from ._job import AnonymizeJob, AnonymizeSettings, JobStatus
from ._provenance import (
    PROVENANCE_FILE,
    add_output_to_provenance,
    run_provenance,
    sha256_array,
    sha256_file,
    write_provenance,
)
from ._scores import (
    DECISION_LEVEL_PCE,
    AttributionResult,
    ResultsTable,
    attribute,
    attribution_verdict,
    pce_verdict,
    trace_warning,
)
from ._session import AssemblyOutcome, AssemblySettings, RunSession
from ._steps import RunHistory, StepSummary, StepThrottle

__all__ = [
    "DECISION_LEVEL_PCE",
    "PROVENANCE_FILE",
    "AnonymizeJob",
    "AnonymizeSettings",
    "AssemblyOutcome",
    "AssemblySettings",
    "AttributionResult",
    "JobStatus",
    "ResultsTable",
    "RunHistory",
    "RunSession",
    "StepSummary",
    "StepThrottle",
    "add_output_to_provenance",
    "attribute",
    "attribution_verdict",
    "pce_verdict",
    "run_provenance",
    "sha256_array",
    "sha256_file",
    "trace_warning",
    "write_provenance",
]
