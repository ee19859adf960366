"""User profile API: the v2 contract as the mobile app uses it."""
import os

import pytest
import requests

API = os.environ.get("PROFILE_API", "http://localhost:8080/api/v2")


@pytest.fixture
def session():
    s = requests.Session()
    s.headers["Authorization"] = "Bearer " + os.environ.get("TEST_TOKEN", "dev-token")
    return s


def test_profile_has_display_name(session):
    response = session.get(f"{API}/users/42/profile")
    assert response.status_code == 200
    name = response.json()["display_name"]
    assert name == "Ada Lovelace"


def test_avatar_url_is_absolute(session):
    response = session.get(f"{API}/users/42/profile")
    avatar = response.json()["avatar"]["url"]
    assert avatar.startswith("https://")


def test_preferences_round_trip(session):
    update = {"language": "de", "newsletter": False}
    response = session.patch(f"{API}/users/42/preferences", json=update)
    assert response.status_code == 200
    assert response.json()["language"] == "de"


def test_unknown_user_is_404(session):
    response = session.get(f"{API}/users/999999/profile")
    assert response.status_code == 404
