"""Search service integration tests against the staging cluster."""
import os

import pytest
import requests

SEARCH_URL = os.environ.get("SEARCH_URL", "http://search.staging:9200")


@pytest.fixture(scope="module")
def index():
    response = requests.put(f"{SEARCH_URL}/products-test", json={"settings": {"number_of_shards": 1}}, timeout=5)
    assert response.status_code in (200, 201)
    yield "products-test"
    requests.delete(f"{SEARCH_URL}/products-test", timeout=5)


def test_bulk_index_then_search(index):
    docs = "\n".join(
        f'{{"index": {{"_id": {i}}}}}\n{{"name": "product {i}", "price": {i * 3}}}' for i in range(200)
    )
    response = requests.post(f"{SEARCH_URL}/{index}/_bulk?refresh=true", data=docs + "\n", timeout=10)
    assert response.status_code == 200
    hits = requests.get(f"{SEARCH_URL}/{index}/_search?q=name:product", timeout=5).json()["hits"]
    assert hits["total"]["value"] == 200


def test_aggregation_by_price(index):
    query = {"size": 0, "aggs": {"cheap": {"range": {"field": "price", "ranges": [{"to": 100}]}}}}
    response = requests.post(f"{SEARCH_URL}/{index}/_search", json=query, timeout=5)
    buckets = response.json()["aggregations"]["cheap"]["buckets"]
    assert buckets[0]["doc_count"] == 34


def test_suggestions(index):
    response = requests.get(f"{SEARCH_URL}/{index}/_search", params={"q": "prod*"}, timeout=3)
    assert response.ok
