"""Template service conformance: the old producers' requests, the old consumers' models.

Usage: templates.py REDIS_URL MANIFESTS_DIR. The engine must run against REDIS_URL with admins
tenant-123:user-456 and test-tenant:user-456. Prints the checks' summary; exits 1 on a failure.
"""

import json
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from oldclient import Checks, connect, entries_after, publish, wait_for  # noqa: E402
from old_models.templates import (  # noqa: E402
    ENTRY_KEYS,
    RESULT_MODELS,
    TemplateListResponse,
    TemplateManifest,
    TemplateRequest,
    TemplateResponse,
    TemplateResult,
    TemplateUsageEvent,
)

URL, MANIFESTS = sys.argv[1], Path(sys.argv[2])
USER = "user-456"
client = connect(URL)
checks = Checks()
sent = []  # (request_id or None, operation or None), in order


def send(tenant, operation, template_id=None, parameters=None):
    """Builds and publishes a request as the old producers did: a TemplateRequest, dumped."""
    request = TemplateRequest(
        operation=operation, tenant_id=tenant, user_id=USER, template_id=template_id, parameters=parameters or {}
    )
    publish(client, "templates:requests", {"data": request.model_dump_json()})
    sent.append((request.request_id, operation))
    return request.request_id


def send_raw(fields):
    publish(client, "templates:requests", fields)
    sent.append((None, None))


def answers():
    """Every result so far, by request id (bad entries under their own ids), as raw data."""
    wait_for(client, "templates:results", lambda f: True, len(sent))
    return {json.loads(f["data"])["request_id"]: f["data"] for _, f in entries_after(client, "templates:results")}


def check_result(name, data, operation):
    """Parses a result entry with the old models; returns the parsed result or None."""
    keys = list(json.loads(data).keys())
    checks.check(f"{name}: key order", keys == ENTRY_KEYS[TemplateResult], str(keys))
    result = checks.parse(name, TemplateResult, data)
    if result is None:
        return None
    checks.check(f"{name}: naive timestamp", result.timestamp.tzinfo is None, str(result.timestamp))
    checks.check(f"{name}: duration_ms", result.duration_ms >= 0, str(result.duration_ms))
    if result.status == "success" and operation in RESULT_MODELS:
        checks.parse(f"{name}: result", RESULT_MODELS[operation], result.result)
    return result


body = "\n".join(f"{{{{ PROJECT_NAME }}}} line {i}: " + "x" * 60 for i in range(120))
manifests = {}
for path in sorted(MANIFESTS.glob("*.json")):
    manifest = json.loads(path.read_text())
    checks.check(f"{path.name} is real-size", len(path.read_text()) > 5000, str(len(path.read_text())))
    checks.parse(f"{path.name} is an old manifest", TemplateManifest, manifest)
    manifests[manifest["name"]] = manifest

# Phase 1: creates, one with a derived id (the old create drew a uuid4), one with the client's id.
nextjs, fastapi = manifests["nextjs-commerce"], manifests["fastapi-production"]
r_create = send("tenant-123", "create", None, {"name": "nextjs-commerce", "content": body, "manifest": nextjs})
r_create_free = send(
    "test-tenant", "create", "test-template-123", {"name": "fastapi-production", "content": body, "manifest": fastapi}
)
results = answers()
created = check_result("create", results[r_create], "create")
check_result("create with the client's id", results[r_create_free], "create")
template_id = created.result["template_id"] if created and created.result else None
checks.check("create succeeded", created is not None and created.status == "success", results[r_create])
try:
    checks.check("a derived template id is a uuid4", uuid.UUID(template_id).version == 4, str(template_id))
except (TypeError, ValueError) as error:
    checks.check("a derived template id is a uuid4", False, f"{template_id}: {error}")
checks.check("the client's id is kept", json.loads(results[r_create_free])["template_id"] == "test-template-123")

# Phase 2: reads and an update.
r_retrieve = send("tenant-123", "retrieve", template_id)
r_search = send("tenant-123", "search", None, {"query": "commerce"})
r_search_all = send("test-tenant", "search")
r_update = send("tenant-123", "update", template_id, {"description": "The storefront, now with faster checkout."})
results = answers()
retrieved = check_result("retrieve", results[r_retrieve], "retrieve")
if retrieved and retrieved.result:
    checks.check("retrieve names the template", retrieved.result["template_id"] == template_id)
    checks.check("retrieve serves the body", retrieved.result.get("content") == body)
    checks.parse("retrieve as the REST model", TemplateResponse, retrieved.result)
found = check_result("search", results[r_search], "search")
if found and found.result:
    checks.check("search finds it", [h["template_id"] for h in found.result["results"]] == [template_id])
    checks.parse("search as the REST list", TemplateListResponse, found.result)
found_all = check_result("search of another tenant", results[r_search_all], "search")
if found_all and found_all.result:
    checks.check("tenants are apart", [h["template_id"] for h in found_all.result["results"]] == ["test-template-123"])
check_result("update", results[r_update], "update")

# Phase 3: delete, a read after it, an operation the old service did not know, bad entries.
r_delete = send("tenant-123", "delete", template_id)
r_gone = send("tenant-123", "retrieve", template_id)
r_unknown = send("tenant-123", "frobnicate", template_id)
send_raw({"payload": "no data field"})
send_raw({"data": "not json"})
send_raw({"data": "[1, 2]"})
send_raw({"data": json.dumps({"tenant_id": "tenant-123", "user_id": USER})})
send_raw({"data": json.dumps({"operation": "retrieve", "tenant_id": 7, "user_id": USER})})
results = answers()
check_result("delete", results[r_delete], "delete")
gone = check_result("retrieve after delete", results[r_gone], "retrieve")
checks.check("a deleted template is gone", gone is not None and gone.status == "error", results[r_gone])
unknown = check_result("unknown operation", results[r_unknown], None)
checks.check(
    "an unknown operation is an error naming it",
    unknown is not None and unknown.status == "error" and "frobnicate" in (unknown.error or ""),
    results[r_unknown],
)
known = {request_id for request_id, _ in sent if request_id}
bad = [data for request_id, data in results.items() if request_id not in known]
checks.check("every bad entry is answered", len(bad) == 5, f"{len(bad)} answers")
for i, data in enumerate(bad):
    parsed = check_result(f"bad entry {i}", data, None)
    checks.check(f"bad entry {i} is an error", parsed is not None and parsed.status == "error", data)
    checks.check(f"bad entry {i} has no template", parsed is not None and parsed.template_id is None, data)

# Usage: one event per parsed request, in the old model.
usage = [f["data"] for _, f in entries_after(client, "templates:usage")]
parsed_requests = [r for r in sent if r[0]]
checks.check("one usage event per parsed request", len(usage) == len(parsed_requests), f"{len(usage)}")
durations = []
for i, data in enumerate(usage):
    keys = list(json.loads(data).keys())
    checks.check(f"usage {i}: key order", keys == ENTRY_KEYS[TemplateUsageEvent], str(keys))
    event = checks.parse(f"usage {i}", TemplateUsageEvent, data)
    if event:
        durations.append(event.duration_ms)
        checks.check(f"usage {i}: naive timestamp", event.timestamp.tzinfo is None)
checks.check("usage durations are real", sum(durations) > 0 and min(durations) >= 0, str(durations))
checks.finish()
