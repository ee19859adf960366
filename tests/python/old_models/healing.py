"""The old healing service's (CARS) wire shapes, field for field from the seed contract,
section 3, as pydantic v2 models: what an unchanged old consumer expects to parse.

Entries on ``automation:results`` have an exact field set (``extra="forbid"``). ``RepairResult``
is the ``asdict()`` of the old dataclass: every old key must be there with its old type; the
engine may add keys of its own beside them, so extras are allowed there.
"""

from typing import Any, Dict, Literal, Optional

from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr

ErrorType = Literal[
    "test_failure",
    "build_error",
    "type_error",
    "lint_error",
    "runtime_error",
    "import_error",
    "dependency_error",
]
Severity = Literal["critical", "high", "medium", "low"]
RepairStatus = Literal["pending", "analyzing", "healing", "validating", "success", "failed", "skipped"]
Strategy = Literal[
    "syntax_repair",
    "dependency_fix",
    "timing_adjustment",
    "assertion_update",
    "environment_healing",
    "flaky_test_stabilization",
    "api_contract_adaptation",
]
# A float the old code wrote; JSON has one number type, so an integral float may arrive as 1.
Float = StrictFloat | StrictInt


class StatusUpdate(BaseModel):
    """``{type: status_update, orchestrator_id, status, timestamp}`` (3.5), exactly."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["status_update"]
    orchestrator_id: StrictStr
    status: Literal["started", "stopped"]
    timestamp: StrictStr


class RepairResultEntry(BaseModel):
    """``{type: repair_result, orchestrator_id, result, timestamp}`` (3.5), exactly; ``result``
    is the JSON text of ``asdict(RepairResult)``."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["repair_result"]
    orchestrator_id: StrictStr
    result: StrictStr
    timestamp: StrictStr


class ErrorEvent(BaseModel):
    """``asdict(ErrorEvent)`` (3.4)."""

    model_config = ConfigDict(extra="forbid")
    error_id: StrictStr
    error_type: ErrorType
    severity: Severity
    file_path: StrictStr
    line_number: Optional[StrictInt]
    stack_trace: Optional[StrictStr]
    error_message: StrictStr
    context: Dict[str, Any]
    timestamp: StrictStr
    healable: StrictBool
    confidence: Float


class ValidationResults(BaseModel):
    """The healer's own validation of a fix."""

    model_config = ConfigDict(extra="forbid")
    success: StrictBool
    syntax_valid: StrictBool
    semantic_score: Float
    confidence: Float
    execution_time: Float
    validation_details: Dict[str, Any]


class HealingResult(BaseModel):
    """``healing_result`` of a RepairResult (3.5)."""

    model_config = ConfigDict(extra="forbid")
    healing_id: StrictStr
    test_id: StrictStr
    strategy_used: Strategy
    success: StrictBool
    original_code: StrictStr
    healed_code: StrictStr
    confidence_score: Float
    validation_results: ValidationResults
    execution_time: Float
    created_at: Float


class RepairResult(BaseModel):
    """``asdict(RepairResult)`` (3.5): every old key with its old type; the engine's own keys
    may sit beside them."""

    model_config = ConfigDict(extra="allow")
    repair_id: StrictStr
    error_event: ErrorEvent
    status: RepairStatus
    healing_result: Optional[HealingResult]
    validation_passed: StrictBool
    fix_applied: StrictBool
    confidence_score: Float
    execution_time: Float
    commit_sha: Optional[StrictStr]
    pr_url: None
    error_message: Optional[StrictStr]
    timestamp: StrictStr


# What the old producers send (3.1-3.3), for the script to build its fixtures from.


class MonitoringConfig(BaseModel):
    auto_fix: bool = True
    require_approval: bool = False
    confidence_threshold: float = 0.75
    auto_commit: bool = False
    create_pr: bool = False
    max_concurrent_repairs: int = 3


class ManualHealRequest(BaseModel):
    """The REST ``POST /api/automation/heal`` body."""

    error_type: ErrorType
    file_path: str
    error_details: Dict[str, Any]
