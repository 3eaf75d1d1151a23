"""The retained rollout status document, ``<prefix>/<dev>/models/rollout`` (docs/rollout.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Phase = Literal[
    "downloading",
    "evaluating",
    "probation",
    "done",
    "rolled_back",
    "refused",
    "stepped_down",
    "stepped_up",
]


class ModelId(BaseModel):
    """A model as results name it."""

    model_config = ConfigDict(frozen=True)

    name: str
    sha256: str = ""


class RolloutStatus(BaseModel):
    """Where the latest rollout of this device stands, and why."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    v: int = 1
    ts: str = Field(description="When this phase began, UTC ISO 8601.")
    device: str
    pipeline: str
    from_: ModelId | None = Field(None, alias="from", description="The model before the switch.")
    to: ModelId = Field(description="The candidate.")
    phase: Phase
    reason: str = Field("", description="Why this phase (a refusal or a rollback names the bar).")
    require: list[str] = Field(default_factory=list, description="The pipeline's bar.")
    max_latency_ms: float = 0.0
    metrics: dict[str, float | None] = Field(
        default_factory=dict, description="The candidate's golden-set numbers (label metrics)."
    )
    from_metrics: dict[str, float | None] = Field(
        default_factory=dict,
        description="Right-sizing: the previous model's golden-set numbers (both labels).",
    )
    probation: dict[str, float] = Field(
        default_factory=dict, description="Probation window so far: frames, failures, p95 ms."
    )

    def encode(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()
