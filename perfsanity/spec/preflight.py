"""``preflight:`` config section: the bounded bring-up check a job runs before any model load.

``enabled`` (default true) and ``timeout_s`` (default 30, at most 60): one short step per role's node
slice checks that every node answers, the job dir is writable from it, its GPUs are visible, the
container starts (when container flags are set) and the nodes reach each other on a port opened for
the check (:mod:`perfsanity.run.preflight`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MAX_PREFLIGHT_S = 60


class Preflight(BaseModel):
    """Harness-owned: frozen, unknown keys are errors, scalars are strict."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)  # "30" is no number, "yes" no bool

    enabled: bool = True
    timeout_s: int = Field(default=30, ge=5, le=MAX_PREFLIGHT_S)
