"""Inventory reservations: reserve, release and oversell protection."""
import pytest

from inventory.stock import OutOfStock, Stock


@pytest.fixture
def stock():
    stock = Stock()
    stock.receive("sku-1", 10)
    stock.receive("sku-2", 1)
    return stock


def test_reserve_reduces_available(stock)
    stock.reserve("sku-1", 3, order="o-1")
    assert stock.available("sku-1") == 7


def test_release_restores_available(stock):
    stock.reserve("sku-1", 3, order="o-1")
    stock.release(order="o-1")
    assert stock.available("sku-1") == 10


def test_oversell_is_refused(stock):
    with pytest.raises(OutOfStock):
        stock.reserve("sku-2", 2, order="o-2")
