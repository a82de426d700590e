"""``respond`` and ``judge`` over a run directory: the library entry points.

The work lives in rooms of its own: :mod:`datakit.judge.work` (records, pool, the fsync'd
append loop shared by both), :mod:`datakit.judge.respond` (candidate responses) and
:mod:`datakit.judge.judging` (rubric scores and order-swapped pairwise preferences). Both plan
their units from the run directory, skip the units already in their append-only log (resume),
send the rest through :class:`datakit.teachers.pool.TeacherPool` and append each finished unit,
fsync'd per batch.
"""

from datakit.judge.judging import (PAIRWISE_SCHEMA, POINTWISE_SCHEMA, JudgeOptions, JudgeResult,  # noqa: F401
                                   judge)
from datakit.judge.respond import (RespondOptions, RespondResult, respond, respond_messages,  # noqa: F401
                                   sample_temperatures)
from datakit.judge.work import load_run_records, resolve_teachers  # noqa: F401
