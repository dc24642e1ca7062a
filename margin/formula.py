"""The isolated-margin formulas (docs/topics/margin-guard.md, *Liquidation distance*). Pure
functions on Decimals.

liquidationPrice: long entry × (1 − 1/leverage + m), short entry × (1 + 1/leverage − m), where m is
the instrument's maintenance margin rate. distanceToLiquidation: (price − liq) / (entry − liq) for a
long, (liq − price) / (liq − entry) for a short — 1 at entry, 0 at liquidation, above 1 in profit.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

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


MONEY_QUANT = Decimal("1e-8")
LEVERAGE_QUANT = Decimal("0.01")


@dataclass(frozen=True)
class FillEffect:
    """What one fill does to a net position and to the account (``fill_effect``)."""

    signed: Decimal  # the signed position after the fill (long > 0)
    entry: Decimal  # its entry price (of the new row after a flip)
    leverage: Decimal  # its effective leverage: size ÷ margin
    closing: Decimal  # the quantity of the fill that reduced the position held before
    pnl: Decimal  # realised on ``closing``: a loss is capped at the margin that part held
    fees: Decimal  # trading fees; on the closing part at most what its margin has left after the loss
    uncovered: Decimal  # loss and fees beyond the closing part's margin: not the user's (isolated margin)
    flipped: bool  # the fill closed the position and opened the other side with the rest

    @property
    def margin(self) -> Decimal:
        return abs(self.signed) * self.entry / self.leverage if self.signed else Decimal(0)


def fill_effect(
    *,
    signed: Decimal,
    entry: Decimal,
    leverage: Decimal,
    fill: Decimal,
    price: Decimal,
    order_leverage: Decimal,
    fee_rate: Decimal,
) -> FillEffect:
    """Fold a signed fill (``fill`` > 0 buys) at ``price`` into the signed position ``signed`` held
    at ``entry`` and ``leverage``. Isolated margin: the closing part can lose at most the margin it
    held, fees included; the rest is uncovered (the broker's). One function for the position service
    and for the venue's check that a fill is funded, so the two cannot disagree."""
    quantity, order_leverage = abs(fill), Decimal(order_leverage)
    fee = (quantity * price * fee_rate).quantize(MONEY_QUANT)
    if signed == 0:
        return FillEffect(fill, price, order_leverage, Decimal(0), Decimal(0), fee, Decimal(0), False)
    held = abs(signed)
    if (signed > 0) == (fill > 0):  # add: average entry, margin-weighted leverage
        margin = held * entry / leverage + quantity * price / order_leverage
        after = held + quantity
        new_entry = ((held * entry + quantity * price) / after).quantize(PRICE_QUANT)
        # rounded down: the position holds at least the margin its fills posted (rounded to nearest,
        # 5.8252 became 5.83 and freed margin the fills had posted, and the loss cap with it)
        new_leverage = max(Decimal(1), (after * new_entry / margin).quantize(LEVERAGE_QUANT, rounding=ROUND_FLOOR))
        return FillEffect(signed + fill, new_entry, new_leverage, Decimal(0), Decimal(0), fee, Decimal(0), False)
    closing = min(quantity, held)
    held_margin = (closing * entry / leverage).quantize(MONEY_QUANT)
    raw_pnl = ((price - entry) * closing * (1 if signed > 0 else -1)).quantize(MONEY_QUANT)
    pnl = max(raw_pnl, -held_margin)
    raw_fee = (closing * price * fee_rate).quantize(MONEY_QUANT)
    closing_fee = min(raw_fee, held_margin + pnl)
    uncovered = (pnl - raw_pnl) + (raw_fee - closing_fee)
    rest = quantity - closing
    if rest == 0:
        return FillEffect(signed + fill, entry, leverage, closing, pnl, closing_fee, uncovered, False)
    rest_fee = (rest * price * fee_rate).quantize(MONEY_QUANT)
    flipped_to = rest if fill > 0 else -rest
    return FillEffect(flipped_to, price, order_leverage, closing, pnl, closing_fee + rest_fee, uncovered, True)
