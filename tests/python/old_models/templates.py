"""The old template service's models (contract section 2), as its producers and consumers used
them: pydantic v2, strict where the old models were strict.

Entry models forbid unknown keys: the contract gives their exact field set, so an extra or a
missing field is a failure. `result` objects allow extras (old readers ignore them) but require
every key the old service returned, with its old type.
"""

import re
import uuid
from datetime import datetime
from typing import Any, List, Literal, Optional

from pydantic import UUID4, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, conint, constr, field_validator


class TemplateRequest(BaseModel):
    """Read from `templates:requests` (field `data`); what old producers build and dump."""

    request_id: StrictStr = Field(default_factory=lambda: str(uuid.uuid4()))
    template_id: Optional[StrictStr] = None
    operation: StrictStr
    tenant_id: StrictStr
    user_id: StrictStr
    parameters: dict = Field(default_factory=dict)
    timestamp: StrictStr = Field(default_factory=lambda: datetime.utcnow().isoformat())


class TemplateResult(BaseModel):
    """Written on `templates:results`, in this order."""

    model_config = ConfigDict(extra="forbid")
    request_id: StrictStr
    template_id: Optional[StrictStr]
    status: Literal["success", "error"]
    result: Optional[dict]
    error: Optional[StrictStr]
    duration_ms: StrictInt
    timestamp: datetime


class TemplateUsageEvent(BaseModel):
    """Written on `templates:usage`, in this order."""

    model_config = ConfigDict(extra="forbid")
    event_id: UUID4
    template_id: StrictStr
    tenant_id: StrictStr
    user_id: StrictStr
    operation: StrictStr
    success: StrictBool
    duration_ms: StrictInt
    timestamp: datetime


ENTRY_KEYS = {
    TemplateResult: ["request_id", "template_id", "status", "result", "error", "duration_ms", "timestamp"],
    TemplateUsageEvent: [
        "event_id", "template_id", "tenant_id", "user_id", "operation", "success", "duration_ms", "timestamp",
    ],
}


# `result` per stream operation (2.3).

class RetrieveResult(BaseModel):
    template_id: Optional[StrictStr]
    name: StrictStr
    category: StrictStr
    version: StrictStr


class SearchHit(BaseModel):
    template_id: StrictStr
    name: StrictStr
    category: StrictStr


class SearchResult(BaseModel):
    results: List[SearchHit]
    total: StrictInt


class CreateResult(BaseModel):
    template_id: StrictStr
    status: Literal["created"]
    message: Literal["Template created successfully"]


class UpdateResult(BaseModel):
    template_id: StrictStr
    status: Literal["updated"]
    message: Literal["Template updated successfully"]


class DeleteResult(BaseModel):
    template_id: StrictStr
    status: Literal["deleted"]
    message: Literal["Template deleted successfully"]


RESULT_MODELS = {
    "retrieve": RetrieveResult,
    "search": SearchResult,
    "create": CreateResult,
    "update": UpdateResult,
    "delete": DeleteResult,
}


# The REST layer's models (2.4): what a template looks like to the old REST clients.

CATEGORY = Literal[
    "backend", "frontend", "fullstack", "mobile", "devops", "data", "ml", "library", "cli", "utility", "api",
    "business_logic",
]


class TemplateResponse(BaseModel):
    id: uuid.UUID
    name: constr(min_length=1, max_length=255)
    description: constr(min_length=10, max_length=1000)
    language: constr(max_length=50)
    version: constr(max_length=20)
    created_by: str
    status: str
    category: CATEGORY
    created_at: datetime
    updated_at: datetime
    framework: Optional[str] = None
    organization: Optional[str] = None
    persona: Optional[str] = None
    git_url: Optional[str] = None
    pin_reason: Optional[str] = None
    pinned_by: Optional[str] = None
    cache_path: Optional[str] = None
    file_path: Optional[str] = None
    git_branch: Optional[str] = "main"
    tags: List[str] = []
    templating_engine: Literal["jinja2", "cookiecutter", "copier", "custom"] = "jinja2"
    quality_score: Optional[float] = Field(default=None, ge=0, le=100)
    success_rate: Optional[float] = Field(default=None, ge=0, le=100)
    security_score: Optional[conint(ge=0, le=100)] = None
    performance_score: Optional[conint(ge=0, le=100)] = None
    maintainability_score: Optional[conint(ge=0, le=100)] = None
    is_pinned: bool = False
    manifest_validated: bool = False
    quality_tier: Optional[str] = "standard"
    pinned_at: Optional[datetime] = None
    manifest_validation_date: Optional[datetime] = None
    last_accessed_at: Optional[datetime] = None
    usage_count: int = 0
    storage_tier: int = 2


class TemplateListResponse(BaseModel):
    total: int
    page: conint(ge=1)
    page_size: conint(ge=1, le=100)
    templates: List[TemplateResponse]


# The manifest schema (2.5), to prove the fixtures are manifests the old service accepted.

class Metadata(BaseModel):
    language: constr(strip_whitespace=True, min_length=1)
    framework: constr(strip_whitespace=True, min_length=1)
    category: CATEGORY
    tags: List[str] = Field(min_length=1, max_length=10)
    license: str

    @field_validator("tags")
    @classmethod
    def normalise_tags(cls, tags):
        """Lower-cased and trimmed first, then checked, as the old validator did."""
        stored = [tag.strip().lower() for tag in tags]
        for tag in stored:
            if not re.fullmatch(r"[a-z0-9-]+", tag) or len(tag) > 30:
                raise ValueError(f"invalid tag {tag!r}")
        return stored


class Dependencies(BaseModel):
    runtime: List[str] = []
    build: List[str] = []
    services: List[str] = []


class Placeholder(BaseModel):
    variable: constr(pattern=r"^[A-Z][A-Z0-9_]*$")
    description: str
    type: Literal["string", "integer", "boolean", "float", "list", "object"] = "string"
    default: Any = None
    required: bool = False
    pattern: Optional[str] = None
    choices: Optional[list] = None


class Hooks(BaseModel):
    pre_generation: List[str] = []
    post_generation: List[str] = []
    pre_deployment: List[str] = []
    post_deployment: List[str] = []


class Configuration(BaseModel):
    min_engine_version: Optional[str] = None
    supported_os: List[Literal["linux", "darwin", "windows", "freebsd", "openbsd"]] = []
    architecture: List[Literal["amd64", "arm64", "arm", "x86", "i386"]] = []

    @field_validator("supported_os", "architecture", mode="before")
    @classmethod
    def lower_case(cls, value):
        return [v.lower() if isinstance(v, str) else v for v in value] if isinstance(value, list) else value


class Documentation(BaseModel):
    readme: Optional[str] = None
    quickstart: Optional[str] = None
    api_docs: Optional[str] = None
    examples: List[str] = []


class TemplateManifest(BaseModel):
    name: constr(pattern=r"^[a-zA-Z0-9_-]+$", min_length=1, max_length=100)
    version: constr(pattern=r"^\d+\.\d+\.\d+(-[0-9A-Za-z-]+)?(\+[0-9A-Za-z-]+)?$")
    description: constr(min_length=10, max_length=500)
    author: str
    engine: Literal["jinja2", "cookiecutter", "copier", "custom"]
    metadata: Metadata
    dependencies: Optional[Dependencies] = None
    placeholders: List[Placeholder] = []
    hooks: Optional[Hooks] = None
    configuration: Optional[Configuration] = None
    documentation: Optional[Documentation] = None
