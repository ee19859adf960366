"""Conformance of the engine's execution part with the old k8s service's wire contract (seed
contract section 4): every k8s:jobs shape the old producers sent, published as they sent it,
and every answer on k8s:status and k8s:results parsed with the old models.

Usage: execution.py REDIS_URL. The engine must trust the runner identity ``ci-runner``
(setting ``execution_runners``). Prints ``IDS {...}`` (the executions the calling test checks
in the engine's state), then the checks' summary; exits 1 when a check failed.
"""

import json
import os
import re
import sys
import time
from datetime import datetime

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import oldclient as oc  # noqa: E402
from old_models.execution import (  # noqa: E402
    CONTRACT_STATUSES,
    NAMESPACE_PREFIX,
    EnvironmentSpec,
    ExecutePayload,
    ExecutionIdPayload,
    ExecutionLogsEntry,
    ExecutionResultEntry,
    JobEntry,
    Result,
    StatusUpdate,
    TestSuite,
)

HEX8 = re.compile(r"^[0-9a-f]{8}$")
NAIVE_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?$")
# Fields the engine adds for its own bookkeeping, which the old consumers never read: every
# engine output carries its origin and output id; a runner's fact names the runner and the fact.
ENGINE_FIELDS = {"origin", "output_id"}
RUNNER_FIELDS = {"runner", "fact_id"}
# Statuses the engine publishes beyond the contract's four (documented in the protocol).
ENGINE_STATUSES = ("requested", "queued", "running", "expired", "cleaned", "not_found")
NO_CLUSTER = "no Kubernetes cluster is configured"

url = sys.argv[1]
client = oc.connect(url)
checks = oc.Checks()


def job(payload, kind=None):
    """A k8s:jobs entry as the old producers wrote it: json.dumps payload, `type` optional."""
    fields = {"payload": json.dumps(payload)}
    if kind is not None:
        fields = {"type": kind, **fields}
    JobEntry.model_validate(fields)
    return oc.publish(client, "k8s:jobs", fields)


def execute(spec, test_config=None, kind="execute_ephemeral_test", **extra):
    payload = {"environment_spec": spec, **extra}
    if test_config is not None:
        payload["test_config"] = test_config
    ExecutePayload.model_validate(payload)
    EnvironmentSpec.model_validate(spec)
    for suite in (test_config or {}).get("test_suites", []):
        TestSuite.model_validate(suite)
    return job(payload, kind)


def details_of(fields):
    try:
        details = json.loads(fields.get("details", "{}"))
    except ValueError:
        return {}
    return details if isinstance(details, dict) else {}


def engine_status(predicate, count=1):
    """The engine's own status updates (they carry its origin) satisfying predicate."""
    return oc.wait_for(client, "k8s:status", lambda f: "origin" in f and predicate(f), count)


def spec(database, **overrides):
    base = {
        "app_image": "registry.example.com/shop/api:1.4.2",
        "app_port": 8080,
        "database_type": database,
        "redis_enabled": False,
        "replicas": 1,
        "resources": None,
        "env_vars": {"LOG_LEVEL": "info"},
    }
    base.update(overrides)
    return base


suites = [
    {"name": "api", "type": "pytest", "test_files": ["tests/api"], "commands": ["pytest tests/api"]},
    {"name": "e2e", "type": "e2e", "patterns": ["e2e/*.spec.ts"], "setup_commands": ["npm ci"],
     "commands": ["npx playwright test", "npm run report"]},
    {"name": "lint", "type": "custom"},
]
resources = {"requests": {"memory": "300Mi", "cpu": "200m"}, "limits": {"memory": "1Gi", "cpu": "1"}}

# name: (entry id, StatefulSet expected or None, jobs expected, warning expected)
executes = {
    "typed_postgresql": (execute(spec("postgresql"), {"commands": ["pytest -x tests/api"]}),
                         "StatefulSet/postgres", 1, False),
    "untyped_mysql_suites": (execute(spec("mysql"), {"test_suites": suites}, kind=None), "StatefulSet/mysql", 3, False),
    "untyped_mongodb": (execute(spec("mongodb"), {"commands": ["pytest"]}, kind=None), "StatefulSet/mongodb", 1, False),
    "unknown_database": (execute(spec("Oracle"), {"commands": ["pytest"]}), None, 1, True),
    "capitalised_postgresql": (execute(spec("PostgreSQL", resources=resources),
                                       {"commands": ["pytest"], "test_suites": suites[:1]}),
                               "StatefulSet/postgres", 2, False),
    "no_test_config": (execute(spec(None), kind=None), None, 0, False),
}
ids = {}
for name, (entry_id, statefulset, jobs, warning) in executes.items():
    first = engine_status(lambda f, e=entry_id: details_of(f).get("entry_id") == e)[0][1]
    execution_id = first["execution_id"]
    ids[name] = execution_id
    checks.check(f"{name}: derived execution_id is 8 lowercase hex", HEX8.match(execution_id), execution_id)
    checks.check(f"{name}: first answer is requested", first["status"] == "requested", first["status"])
    provisioning = engine_status(lambda f, i=execution_id: f["execution_id"] == i and f["status"] == "provisioning")
    details = details_of(provisioning[0][1])
    checks.check(f"{name}: namespace", details.get("namespace") == NAMESPACE_PREFIX + execution_id, details)
    objects = details.get("objects", [])
    statefulsets = [o for o in objects if o.startswith("StatefulSet/")]
    checks.check(f"{name}: database", statefulsets == ([statefulset] if statefulset else []), objects)
    checks.check(f"{name}: one job per command", len([o for o in objects if o.startswith("Job/")]) == jobs, objects)
    checks.check(f"{name}: jobs named test-job-<n>",
                 [o for o in objects if o.startswith("Job/")] == [f"Job/test-job-{n}" for n in range(1, jobs + 1)],
                 objects)
    checks.check(f"{name}: warning only for an unknown database", ("warning" in details) == warning, details)

# The README's job format: no type, no environment_spec. An execute, answered failed.
readme = job({"job_id": "job-001", "execution_id": "readme-exec-1", "operation": "create",
              "config": {"image": "nginx:1.25", "replicas": 1}})
failed = engine_status(lambda f: f["execution_id"] == "readme-exec-1")[0][1]
checks.check("readme job: failed", failed["status"] == "failed", failed)
checks.check("readme job: names what is missing", "app_image" in details_of(failed).get("error", ""), failed)
checks.check("readme job: its entry", details_of(failed).get("entry_id") == readme, failed)

# Cleanup and logs for an execution nobody made: answered, not dropped.
ExecutionIdPayload.model_validate({"execution_id": "0badc0de"})
job({"execution_id": "0badc0de"}, "cleanup_environment")
job({"execution_id": "0badc0de"}, "get_logs")
not_found = engine_status(lambda f: f["execution_id"] == "0badc0de")[0][1]
checks.check("unknown cleanup: not_found", not_found["status"] == "not_found", not_found)
unknown_logs = oc.wait_for(client, "k8s:results",
                           lambda f: f.get("execution_id") == "0badc0de" and f.get("type") == "execution_logs", 1)
checks.check("unknown get_logs: says so", "no execution 0badc0de" in unknown_logs[0][1]["logs"], unknown_logs)

# Cleanup and logs for known executions without a cluster: the engine's runner answers them.
job({"execution_id": ids["typed_postgresql"]}, "cleanup_environment")
job({"execution_id": ids["untyped_mysql_suites"]}, "get_logs")
cleaned = oc.wait_for(client, "k8s:status", lambda f: f.get("execution_id") == ids["typed_postgresql"]
                      and f.get("status") == "cleaned", 1)[0][1]
checks.check("cleanup without a cluster: says so", NO_CLUSTER in details_of(cleaned).get("note", ""), cleaned)
logs = oc.wait_for(client, "k8s:results", lambda f: f.get("execution_id") == ids["untyped_mysql_suites"]
                   and f.get("type") == "execution_logs", 1)[0][1]
checks.check("get_logs without a cluster: says so", NO_CLUSTER in logs["logs"], logs)

# A status fact exactly as the old service wrote it (no runner): recorded, never acted on.
foreign = ids["untyped_mongodb"]
for status in ("ready", "completed"):
    oc.publish(client, "k8s:status", {"type": "status_update", "execution_id": foreign, "status": status,
                                      "details": json.dumps({"namespace": NAMESPACE_PREFIX + foreign}),
                                      "timestamp": datetime.utcnow().isoformat()})
oc.publish(client, "k8s:results", {"type": "execution_logs", "execution_id": foreign, "logs": "forged",
                                   "timestamp": datetime.utcnow().isoformat()})

# A runner named in the settings reports a whole run.
trusted = ids["unknown_database"]
now = datetime.utcnow().isoformat()
for status in ("ready", "running"):
    oc.publish(client, "k8s:status", {"type": "status_update", "execution_id": trusted, "status": status,
                                      "details": "{}", "timestamp": now, "runner": "ci-runner"})
result = {"execution_id": trusted, "namespace": NAMESPACE_PREFIX + trusted, "status": "completed",
          "test_results": [{"job_name": "test-job-1", "command": "pytest", "success": True,
                            "output": "3 passed", "duration": 5.0}]}
Result.model_validate(result)
oc.publish(client, "k8s:results", {"type": "execution_result", "execution_id": trusted,
                                   "result": json.dumps(result), "timestamp": now, "runner": "ci-runner"})
oc.publish(client, "k8s:status", {"type": "status_update", "execution_id": trusted, "status": "completed",
                                  "details": "{}", "timestamp": now, "runner": "ci-runner"})

# Ordinary traffic about executions the engine never saw: not dead letters.
never = "feedc0de"
oc.publish(client, "k8s:status", {"type": "status_update", "execution_id": never, "status": "provisioning",
                                  "details": "{}", "timestamp": now})
oc.publish(client, "k8s:results", {"type": "execution_logs", "execution_id": never, "logs": "x", "timestamp": now})
oc.publish(client, "k8s:results", {"type": "execution_result", "execution_id": never,
                                   "result": json.dumps({**result, "execution_id": never}), "timestamp": now})

# Every entry on the two answer streams, parsed with the old models.
statuses_seen = set()
for entry_id, fields in oc.entries_after(client, "k8s:status"):
    own = "origin" in fields
    extra = set(fields) - {"type", "execution_id", "status", "details", "timestamp"}
    checks.check(f"status {entry_id}: only bookkeeping fields added", extra <= ENGINE_FIELDS | RUNNER_FIELDS, extra)
    update = checks.parse(f"status {entry_id}", StatusUpdate, {k: v for k, v in fields.items() if k not in extra})
    if update is None:
        continue
    checks.check(f"status {entry_id}: details is a JSON object", isinstance(json.loads(update.details), dict),
                 update.details)
    checks.check(f"status {entry_id}: naive ISO timestamp", NAIVE_ISO.match(update.timestamp)
                 and datetime.fromisoformat(update.timestamp).tzinfo is None, update.timestamp)
    if own or "runner" in fields:
        statuses_seen.add(update.status)
        checks.check(f"status {entry_id}: a known status", update.status in CONTRACT_STATUSES + ENGINE_STATUSES,
                     update.status)
for entry_id, fields in oc.entries_after(client, "k8s:results"):
    extra = set(fields) & (ENGINE_FIELDS | RUNNER_FIELDS)
    plain = {k: v for k, v in fields.items() if k not in extra}
    model = ExecutionResultEntry if fields.get("type") == "execution_result" else ExecutionLogsEntry
    parsed = checks.parse(f"results {entry_id}", model, plain)
    if parsed is None:
        continue
    checks.check(f"results {entry_id}: naive ISO timestamp", NAIVE_ISO.match(parsed.timestamp), parsed.timestamp)
    if model is ExecutionResultEntry:
        body = checks.parse(f"results {entry_id}: result", Result, parsed.result)
        if body is not None:
            checks.check(f"results {entry_id}: result names its execution", body.execution_id == parsed.execution_id,
                         body)
checks.check("statuses seen", {"requested", "provisioning", "failed", "cleaned", "not_found"} <= statuses_seen,
             statuses_seen)

# Give the engine the time to take the last facts, then: no dead letter from any of this.
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    groups = client.xinfo_groups(oc.PREFIX + "k8s:results")
    if all(g.get("lag") == 0 and g.get("pending") == 0 for g in groups):
        break
    time.sleep(0.05)
for stream in ("k8s:jobs", "k8s:status", "k8s:results"):
    dead = client.xrange(oc.PREFIX + stream + ":dead")
    checks.check(f"{stream}: no dead letters", dead == [], dead)

ids["foreign"] = foreign
ids["trusted"] = trusted
print("IDS " + json.dumps(ids))
checks.finish()
