"""The old k8s execution service's wire shapes (seed contract section 4), field for field.

Stream entries are flat string fields (redis-py with ``decode_responses=True``); JSON travels
inside string fields (``payload``, ``result``, ``details``). Where the contract gives an exact
field set the model forbids extra fields, so that an added or a missing field fails.
"""

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr

# 4.1: what producers send on k8s:jobs.

JOB_TYPES = ("execute_ephemeral_test", "cleanup_environment", "get_logs")

DATABASE_TYPES = ("postgresql", "mysql")


class JobEntry(BaseModel):
    """A k8s:jobs entry: ``type`` (missing = execute_ephemeral_test) and ``payload`` (JSON)."""

    model_config = ConfigDict(extra="forbid")
    type: Optional[StrictStr] = None
    payload: StrictStr = "{}"


class Resources(BaseModel):
    """Kubernetes form; null takes 256Mi/100m requests, 512Mi/500m limits."""

    requests: dict[str, str]
    limits: dict[str, str]


class EnvironmentSpec(BaseModel):
    """``environment_spec`` keys the old service read."""

    app_image: Optional[str] = None
    app_port: Optional[int] = None
    database_type: Optional[str] = None
    redis_enabled: bool = False
    replicas: int = 1
    resources: Optional[Resources] = None
    env_vars: Optional[dict[str, str]] = None


class TestSuite(BaseModel):
    """The REST body's ``test_suites[]`` (api.py)."""

    name: str
    type: Literal["pytest", "unit", "integration", "e2e", "performance", "security", "custom"]
    test_files: Optional[list[str]] = None
    patterns: Optional[list[str]] = None
    commands: Optional[list[str]] = None
    setup_commands: Optional[list[str]] = None


class ExecutePayload(BaseModel):
    environment_spec: EnvironmentSpec
    test_config: dict = {}


class ExecutionIdPayload(BaseModel):
    """``cleanup_environment`` and ``get_logs``."""

    execution_id: str


# 4.2: identity and status.

NAMESPACE_PREFIX = "quality-fabric-"

# Environment: provisioning -> ready | failed; test outcome completed | failed.
CONTRACT_STATUSES = ("provisioning", "ready", "failed", "completed")


# 4.3: what the service writes on k8s:status and k8s:results.


class StatusUpdate(BaseModel):
    """k8s:status ``status_update``: exactly these five fields."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["status_update"]
    execution_id: StrictStr
    status: StrictStr
    details: StrictStr  # JSON text, `{}` by default
    timestamp: StrictStr


class ExecutionResultEntry(BaseModel):
    """k8s:results ``execution_result``."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["execution_result"]
    execution_id: StrictStr
    result: StrictStr  # JSON text of Result
    timestamp: StrictStr


class ExecutionLogsEntry(BaseModel):
    """k8s:results ``execution_logs``: raw, unbounded text."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["execution_logs"]
    execution_id: StrictStr
    logs: StrictStr
    timestamp: StrictStr


class TestResult(BaseModel):
    """One item of ``result.test_results``."""

    model_config = ConfigDict(extra="forbid")
    job_name: StrictStr
    command: StrictStr
    success: StrictBool
    output: StrictStr
    duration: float  # seconds


class Result(BaseModel):
    """The ``result`` JSON object of ``execution_result``."""

    model_config = ConfigDict(extra="forbid")
    execution_id: StrictStr
    namespace: StrictStr
    test_results: list[TestResult]
    status: Literal["completed", "failed"]
