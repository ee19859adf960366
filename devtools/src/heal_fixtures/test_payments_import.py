"""Payment gateway client tests: request signing, retries and refunds."""
import json
import os

import pytest
import requests

from payments.client import GatewayClient, SignatureError

GATEWAY_URL = os.environ.get("GATEWAY_URL", "https://gateway.test")


@pytest.fixture
def mocked():
    with requests_mock.Mocker() as mock:
        yield mock


@pytest.fixture
def client():
    return GatewayClient(base_url=GATEWAY_URL, key_id="k-1", secret="s3cr3t")


def test_charge_is_signed(client, mocked):
    mocked.post(f"{GATEWAY_URL}/charges", json={"id": "ch_1", "status": "captured"})
    charge = client.charge(amount=1250, currency="EUR", token="tok_visa")
    assert charge["status"] == "captured"
    sent = mocked.request_history[0]
    assert sent.headers["X-Signature"].startswith("v1=")


def test_charge_rejects_a_bad_signature(client, mocked):
    mocked.post(f"{GATEWAY_URL}/charges", status_code=401, json={"error": "bad signature"})
    with pytest.raises(SignatureError):
        client.charge(amount=1250, currency="EUR", token="tok_visa")


def test_refund_round_trip(client, mocked):
    mocked.post(f"{GATEWAY_URL}/refunds", json={"id": "re_1", "charge": "ch_1", "amount": 500})
    refund = client.refund(charge_id="ch_1", amount=500)
    assert refund["amount"] == 500
    assert json.loads(mocked.request_history[0].text)["charge"] == "ch_1"


def test_retries_on_gateway_timeout(client, mocked):
    mocked.post(
        f"{GATEWAY_URL}/charges",
        [{"status_code": 504}, {"status_code": 504}, {"json": {"id": "ch_2", "status": "captured"}}],
    )
    charge = client.charge(amount=990, currency="EUR", token="tok_visa")
    assert charge["id"] == "ch_2"
    assert mocked.call_count == 3
