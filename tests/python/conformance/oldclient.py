"""What the old services' clients do on the wire, with redis-py as they used it.

The old producers XADD string fields with auto ids (no MAXLEN) and read answers with
``decode_responses=True``. Each conformance script imports this module, publishes fixtures the
way the old code did, waits for the engine's answers and parses them with the old models
(pydantic v2, written field for field from the wire contract).
"""

import json
import sys
import time

import redis

PREFIX = "maestro:streams:"


def connect(url):
    return redis.Redis.from_url(url, decode_responses=True)


def publish(client, stream, fields):
    """XADD as the old producers did: every value a string, auto id."""
    for key, value in fields.items():
        if not isinstance(value, str):
            raise TypeError(f"old producers send strings only: {key}={value!r}")
    return client.xadd(PREFIX + stream, fields)


def entries_after(client, stream, first_id="-"):
    """Every entry of a stream from first_id on: [(id, fields)]."""
    return client.xrange(PREFIX + stream, first_id, "+")


def wait_for(client, stream, predicate, count, timeout=30.0):
    """Waits until `count` entries of `stream` satisfy predicate(fields); returns them in order."""
    deadline = time.monotonic() + timeout
    while True:
        found = [(i, f) for i, f in entries_after(client, stream) if predicate(f)]
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{stream}: {len(found)} of {count} answers after {timeout} s")
        time.sleep(0.05)


class Checks:
    """Counts what was checked; a failed check is collected, the script exits 1 at the end."""

    def __init__(self):
        self.passed = 0
        self.failed = []

    def check(self, name, condition, detail=""):
        if condition:
            self.passed += 1
        else:
            self.failed.append(f"{name}: {detail}")

    def parse(self, name, model, data):
        """Parses `data` (a dict or JSON text) with an old model, as the old consumer would."""
        try:
            if isinstance(data, str):
                parsed = model.model_validate_json(data)
            else:
                parsed = model.model_validate(data)
        except Exception as error:  # pydantic's ValidationError, or bad JSON
            self.failed.append(f"{name}: {model.__name__} refused it: {error}")
            return None
        self.passed += 1
        return parsed

    def finish(self):
        for failure in self.failed:
            print(f"FAILED {failure}")
        print(json.dumps({"passed": self.passed, "failed": len(self.failed)}))
        sys.exit(1 if self.failed else 0)
