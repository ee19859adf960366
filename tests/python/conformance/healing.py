"""Healing conformance: publishes every shape the old healing service's producers sent
(automation:jobs, automation:healing, automation:errors; seed contract 3.1-3.4), waits for the
engine's answers on automation:results and parses each with the old models (3.5).

Usage: healing.py REDIS_URL PROJECT_DIR. PROJECT_DIR holds the failing pytest files of the
demo's scenario under tests/ (the test writes them). No request carries the source: the
engine reads the files from the project, as the old orchestrator did.

The engine stamps each of its entries with ``origin`` and ``output_id`` (how it recognises
its own outputs when it reads them back); the old consumers read fields by name and ignore
them, so they are checked here and stripped before the exact-field models parse the entry.
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from oldclient import Checks, connect, entries_after, publish, wait_for  # noqa: E402
from old_models.healing import (  # noqa: E402
    ManualHealRequest,
    MonitoringConfig,
    RepairResult,
    RepairResultEntry,
    StatusUpdate,
)

ENVELOPE = {"origin", "output_id"}

url, project = sys.argv[1], sys.argv[2]
client = connect(url)
checks = Checks()

# (file under tests/, message, error type, expected strategy)
FAILURES = [
    ("test_payments_import.py", "ModuleNotFoundError: No module named 'requests_mock'", "import_error", "dependency_fix"),
    ("test_cart_assertion.py", "AssertionError: assert 38.008599999999994 == 38.0086", "test_failure", "assertion_update"),
    ("test_search_timeout.py", "requests.exceptions.ReadTimeout: Read timed out. (read timeout=5)", "test_failure", "timing_adjustment"),
    ("test_profile_api_change.py", "requests.exceptions.HTTPError: 404 Client Error: Not Found", "test_failure", "api_contract_adaptation"),
    ("test_reports_environment.py", "FileNotFoundError: [Errno 2] No such file or directory: 'build/x.csv'", "runtime_error", "environment_healing"),
    ("test_sessions_flaky.py", "test_refresh failed intermittently: passed 7 of 10 runs", "test_failure", "flaky_test_stabilization"),
    ("test_inventory_syntax.py", "SyntaxError: invalid syntax (test_inventory_syntax.py, line 16)", "test_failure", "syntax_repair"),
]


def envelope_stripped(name, fields):
    extra = set(fields) - ENVELOPE
    checks.check(f"{name}: engine envelope", fields.get("origin", "").startswith("maestro-engine/"), fields)
    return {k: v for k, v in fields.items() if k in extra}


def status_updates():
    return [f for _, f in entries_after(client, "automation:results") if f.get("type") == "status_update"]


def repair_results():
    return [f for _, f in entries_after(client, "automation:results") if f.get("type") == "repair_result"]


# 3.1 start_monitoring: with a full config (and the ignored timestamp), and with none.
config = MonitoringConfig().model_dump()
publish(client, "automation:jobs", {
    "type": "start_monitoring",
    "payload": json.dumps({"project_path": project, "config": config}),
    "timestamp": "2026-12-07T10:00:00.000001",
})
other = os.path.join(os.path.dirname(project), "other-project")
publish(client, "automation:jobs", {"type": "start_monitoring", "payload": json.dumps({"project_path": other})})
started = wait_for(client, "automation:results", lambda f: f.get("type") == "status_update", 2)
orchestrators = []
for i, (_, fields) in enumerate(started):
    update = checks.parse(f"started #{i}", StatusUpdate, envelope_stripped("started", fields))
    if update:
        checks.check(f"started #{i}: status", update.status == "started", update)
        orchestrators.append(update.orchestrator_id)
orchestrator = orchestrators[0] if orchestrators else ""
other_orchestrator = orchestrators[1] if len(orchestrators) > 1 else ""

# 3.3 every heal-request shape, none with the source; each message tagged to find its answer.
requests = []  # (tag, shape, stream, payload, expected strategy or None for a failed answer)
for n, (name, message, error_type, strategy) in enumerate(FAILURES):
    relative = f"tests/{name}"
    absolute = os.path.join(project, relative)
    file = absolute if n % 2 == 0 else relative
    tag = f"[case-{n}]"
    msg = f"{message} {tag}"
    trace = f'Traceback (most recent call last):\n  File "{file}", line 20\n{msg}'
    manual = ManualHealRequest(error_type=error_type, file_path=file,
                               error_details={"error_message": msg, "stack_trace": trace, "line_number": 20})
    event = {"error_id": f"pytest_{-8123456789012345 - n}", "error_type": error_type, "severity": "high",
             "file_path": file, "line_number": 20, "stack_trace": trace[:500], "error_message": msg,
             "context": {"output": msg[:1000]}, "timestamp": "2026-12-07T10:00:00.123456",
             "healable": True, "confidence": 0.85}
    shapes = [
        ("manual", manual.model_dump()),
        ("error_event", event),
        ("orchestrator", {"error_message": msg, "stack_trace": trace, "context": {"test_name": "test_x"},
                          "file_path": file}),
        ("readme", {"error_type": error_type, "error_message": msg, "stack_trace": trace, "test_file": file}),
    ]
    shape, payload = shapes[n % 4]
    requests.append((tag, shape, "automation:healing", payload, strategy))
# The same shapes once more on the other stream the old code read them from.
name, message, error_type, strategy = FAILURES[1]
tag = "[case-jobs]"
payload = ManualHealRequest(error_type=error_type, file_path=f"tests/{name}",
                            error_details={"error_message": f"{message} {tag}"}).model_dump()
requests.append((tag, "heal_test_failure", "automation:jobs", payload, strategy))
# With the orchestrator named, as the old orchestrator itself would.
tag = "[case-named]"
requests.append((tag, "named", "automation:healing",
                 {"orchestrator_id": orchestrator, "error_type": "test_failure", "file_path": f"tests/{FAILURES[5][0]}",
                  "error_message": f"{FAILURES[5][1]} {tag}"}, FAILURES[5][3]))
# The orchestrator's error details alone name no file: answered with a failed repair_result.
tag = "[case-nofile]"
requests.append((tag, "orchestrator_no_file", "automation:healing",
                 {"error_message": f"AssertionError {tag}", "stack_trace": "", "context": {}}, None))
# A file that is not in the project: answered with the reason.
tag = "[case-missing]"
requests.append((tag, "missing_file", "automation:healing",
                 {"error_type": "test_failure", "file_path": os.path.join(project, "tests/test_gone.py"),
                  "error_details": {"error_message": f"AssertionError {tag}"}}, None))



def names_relative_file(payload):
    file = payload.get("file_path") or payload.get("test_file") or ""
    return file != "" and not file.startswith("/") and "orchestrator_id" not in payload


def send(tag, shape, stream, payload):
    if stream == "automation:jobs":
        publish(client, stream, {"type": "heal_test_failure", "payload": json.dumps(payload),
                                 "timestamp": "2026-12-07T10:00:01"})
    else:
        publish(client, stream, {"payload": json.dumps(payload)})


# Absolute paths while two projects are monitored: each goes to the project that holds it.
for tag, shape, stream, payload, _ in requests:
    if not names_relative_file(payload):
        send(tag, shape, stream, payload)
# A relative path goes to the only running orchestrator: stop the other one first (3.1).
publish(client, "automation:jobs", {"type": "stop_monitoring", "payload": json.dumps({"orchestrator_id": other_orchestrator})})
stopped_other = wait_for(client, "automation:results", lambda f: f.get("type") == "status_update", 3)[2][1]
update = checks.parse("stopped other", StatusUpdate, envelope_stripped("stopped other", stopped_other))
checks.check("stopped other", update is not None and (update.orchestrator_id, update.status) == (other_orchestrator, "stopped"), update)
for tag, shape, stream, payload, _ in requests:
    if names_relative_file(payload):
        send(tag, shape, stream, payload)

# 3.2 automation:errors: flat fields, counted only (no answer).
publish(client, "automation:errors", {"error_type": "test_failure", "error_message": "Test failed: test_total",
                                      "file_path": "tests/test_cart_assertion.py"})
publish(client, "automation:errors", {"error_type": "lint_error", "error_message": "no-unused-vars",
                                      "file_path": os.path.join(project, "web/app.js"), "line_number": "3",
                                      "severity": "low", "stack_trace": ""})

answers = wait_for(client, "automation:results", lambda f: f.get("type") == "repair_result", len(requests))
by_tag = {}
for i, (_, fields) in enumerate(answers):
    entry = checks.parse(f"repair_result #{i}", RepairResultEntry, envelope_stripped("repair_result", fields))
    if not entry:
        continue
    result = checks.parse(f"repair_result #{i}.result", RepairResult, entry.result)
    if not result:
        continue
    message = result.error_event.error_message
    tag = next((t for t, *_ in requests if t in message), None)
    checks.check(f"repair_result #{i}: names its request", tag is not None, message)
    if tag in by_tag:
        checks.failed.append(f"{tag}: answered twice")
    by_tag[tag] = (entry, result)

for tag, shape, stream, payload, strategy in requests:
    if tag not in by_tag:
        checks.failed.append(f"{tag} ({shape}): no answer")
        continue
    entry, result = by_tag[tag]
    name = f"{tag} ({shape})"
    if strategy is None:
        checks.check(f"{name}: failed", result.status == "failed", result.status)
        checks.check(f"{name}: says why", bool(result.error_message), result.error_message)
        checks.check(f"{name}: no healing_result", result.healing_result is None, result.healing_result)
        continue
    checks.check(f"{name}: orchestrator", entry.orchestrator_id == orchestrator, entry.orchestrator_id)
    checks.check(f"{name}: final at once", result.status == "success", f"{result.status}: {result.error_message}")
    healing = result.healing_result
    checks.check(f"{name}: healing_result", healing is not None, result)
    if healing is None:
        continue
    checks.check(f"{name}: strategy", healing.strategy_used == strategy, healing.strategy_used)
    checks.check(f"{name}: whole file", healing.original_code.startswith('"""'), healing.original_code[:40])
    try:
        compile(healing.healed_code, "healed.py", "exec")
        parses = True
    except SyntaxError as error:
        parses = error
    checks.check(f"{name}: healed code compiles", parses is True, parses)
    checks.check(f"{name}: syntax_valid", healing.validation_results.syntax_valid, healing.validation_results)
    expected = min(1.0, 0.7 + 0.3 * healing.validation_results.semantic_score)
    checks.check(f"{name}: confidence", abs(healing.confidence_score - expected) < 1e-9, healing.confidence_score)
    checks.check(f"{name}: validation_passed", result.validation_passed is False, result.validation_passed)
    checks.check(f"{name}: error_event type", result.error_event.error_type == payload.get("error_type", "test_failure"),
                 result.error_event.error_type)
    if shape == "error_event":
        checks.check(f"{name}: the ErrorEvent comes back as sent", result.error_event.model_dump() == payload,
                     result.error_event)

# 3.1 stop_monitoring: an unknown id, then the known one: each answered `stopped`.
publish(client, "automation:jobs", {"type": "stop_monitoring", "payload": json.dumps({"orchestrator_id": "orch-unknown"})})
publish(client, "automation:jobs", {"type": "stop_monitoring", "payload": json.dumps({"orchestrator_id": orchestrator})})
updates = wait_for(client, "automation:results", lambda f: f.get("type") == "status_update", 5)
stops = []
for i, (_, fields) in enumerate(updates[3:]):
    update = checks.parse(f"stopped #{i}", StatusUpdate, envelope_stripped("stopped", fields))
    if update:
        stops.append((update.orchestrator_id, update.status))
checks.check("stops answered in order", stops == [("orch-unknown", "stopped"), (orchestrator, "stopped")], stops)

checks.finish()
