"""Session store behaviour under concurrent logins."""
import threading
import time

import pytest

from auth.sessions import SessionStore


@pytest.fixture
def store():
    store = SessionStore(ttl_seconds=2)
    yield store
    store.clear()


def test_concurrent_logins_get_distinct_tokens(store):
    tokens = []

    def login(user):
        tokens.append(store.create(user))

    threads = [threading.Thread(target=login, args=(f"user-{i}",)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(tokens)) == 20


def test_session_expires_after_ttl(store):
    token = store.create("ada")
    time.sleep(2.1)
    assert store.get(token) is None


def test_refresh_extends_the_session(store):
    token = store.create("grace")
    time.sleep(1.0)
    store.refresh(token)
    time.sleep(1.5)
    assert store.get(token) == "grace"
