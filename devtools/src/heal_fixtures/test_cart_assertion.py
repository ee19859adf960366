"""Shopping cart totals: discounts, taxes and rounding."""
from decimal import Decimal

import pytest

from shop.cart import Cart, Item


@pytest.fixture
def cart():
    cart = Cart(currency="EUR", tax_rate=Decimal("0.19"))
    cart.add(Item(sku="book-1", price=Decimal("12.99"), quantity=2))
    cart.add(Item(sku="pen-3", price=Decimal("1.49"), quantity=4))
    return cart


def test_subtotal(cart):
    assert cart.subtotal() == Decimal("31.94")


def test_total_with_tax(cart):
    total = float(cart.total())
    assert total == 38.0086


def test_discount_code_applies_once(cart):
    cart.apply_code("WELCOME10")
    cart.apply_code("WELCOME10")
    assert cart.discounts() == [Decimal("3.19")]


def test_empty_cart_has_zero_total():
    empty = Cart(currency="EUR", tax_rate=Decimal("0.19"))
    assert empty.total() == 0


def test_removing_an_item_updates_the_subtotal(cart):
    cart.remove("pen-3")
    assert cart.subtotal() == Decimal("25.98")


@pytest.mark.parametrize("quantity", [1, 2, 10])
def test_quantity_scales_the_line_total(quantity):
    cart = Cart(currency="EUR", tax_rate=Decimal("0"))
    cart.add(Item(sku="mug-7", price=Decimal("8.50"), quantity=quantity))
    assert cart.subtotal() == Decimal("8.50") * quantity
