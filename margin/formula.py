"""The isolated-margin formulas (docs/topics/margin-guard.md, *Liquidation distance*). Pure
functions on Decimals.

liquidationPrice: long entry × (1 − 1/leverage + m), short entry × (1 + 1/leverage − m), where m is
the instrument's maintenance margin rate. distanceToLiquidation: (price − liq) / (entry − liq) for a
long, (liq − price) / (liq − entry) for a short — 1 at entry, 0 at liquidation, above 1 in profit.
"""

from __future__ import annotations

from decimal import Decimal

PRICE_QUANT = Decimal("1e-8")


def liquidation_price(side: str, entry: Decimal, leverage: Decimal, m: Decimal) -> Decimal:
    if side == "long":
        return (entry * (1 - 1 / Decimal(leverage) + m)).quantize(PRICE_QUANT)
    return (entry * (1 + 1 / Decimal(leverage) - m)).quantize(PRICE_QUANT)


def distance_to_liquidation(side: str, entry: Decimal, liq: Decimal, price: Decimal) -> Decimal:
    span = entry - liq if side == "long" else liq - entry
    if span <= 0:
        return Decimal(0)
    return ((price - liq) if side == "long" else (liq - price)) / span


def price_at_distance(entry: Decimal, liq: Decimal, distance: Decimal) -> Decimal:
    """The price where the distance to liquidation is ``distance`` (same formula for both sides)."""
    return (liq + Decimal(distance) * (entry - liq)).quantize(PRICE_QUANT)


def in_risk(side: str, guard_price: Decimal, price: Decimal) -> bool:
    """distance ≤ threshold, read through the guard price."""
    return price <= guard_price if side == "long" else price >= guard_price


def recovered(side: str, rearm_price: Decimal, price: Decimal) -> bool:
    """distance > threshold + band."""
    return price > rearm_price if side == "long" else price < rearm_price
