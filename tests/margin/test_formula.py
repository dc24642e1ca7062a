"""The liquidation formula of docs/topics/margin-guard.md, for longs and shorts: at entry, in
profit, at the threshold, at liquidation."""

from decimal import Decimal as D

from margin.formula import distance_to_liquidation, in_risk, liquidation_price, price_at_distance, recovered


def test_long_liquidation_price_and_distance():
    # entry 100, 10x, m 0.005: liq = 100 × (1 − 0.1 + 0.005) = 90.5
    liq = liquidation_price("long", D("100"), D("10"), D("0.005"))
    assert liq == D("90.5")
    assert distance_to_liquidation("long", D("100"), liq, D("100")) == 1  # at entry
    assert distance_to_liquidation("long", D("100"), liq, D("109.5")) == 2  # in profit
    assert distance_to_liquidation("long", D("100"), liq, liq) == 0  # at liquidation
    threshold = price_at_distance(D("100"), liq, D("0.85"))
    assert threshold == D("98.575")  # 90.5 + 0.85 × 9.5
    assert distance_to_liquidation("long", D("100"), liq, threshold) == D("0.85")
    assert in_risk("long", threshold, threshold) and not in_risk("long", threshold, D("98.58"))
    assert in_risk("long", liq, D("90")) and not in_risk("long", liq, D("90.51"))


def test_short_liquidation_price_and_distance():
    # entry 100, 10x, m 0.005: liq = 100 × (1 + 0.1 − 0.005) = 109.5
    liq = liquidation_price("short", D("100"), D("10"), D("0.005"))
    assert liq == D("109.5")
    assert distance_to_liquidation("short", D("100"), liq, D("100")) == 1
    assert distance_to_liquidation("short", D("100"), liq, D("90.5")) == 2  # in profit (price fell)
    assert distance_to_liquidation("short", D("100"), liq, liq) == 0
    threshold = price_at_distance(D("100"), liq, D("0.85"))
    assert threshold == D("101.425")  # 109.5 − 0.85 × 9.5
    assert distance_to_liquidation("short", D("100"), liq, threshold) == D("0.85")
    assert in_risk("short", threshold, D("101.43")) and not in_risk("short", threshold, D("101.42"))
    rearm = price_at_distance(D("100"), liq, D("0.90"))
    assert recovered("short", rearm, D("100.9")) and not recovered("short", rearm, D("101"))


def test_beyond_liquidation_the_distance_is_negative():
    liq = liquidation_price("long", D("100"), D("2"), D("0.01"))
    assert liq == D("51")
    assert distance_to_liquidation("long", D("100"), liq, D("50")) < 0


def test_an_added_position_holds_at_least_the_margin_its_fills_posted():
    # 1,000 at 40,000 with 3x, then 1,000 more at 40,000 with 100x: the margin-weighted leverage is
    # 5.8252…; rounded to the nearest cent it was 5.83, holding 11,206 less than the fills posted
    # (outside review, twelfth session). Rounded down, the position holds what was posted, or more.
    from margin.formula import fill_effect

    effect = fill_effect(
        signed=D(1000),
        entry=D(40000),
        leverage=D(3),
        fill=D(1000),
        price=D(40000),
        order_leverage=D(100),
        fee_rate=D("0.0005"),
    )
    posted = D(1000) * 40000 / 3 + D(1000) * 40000 / 100
    assert effect.leverage == D("5.82")
    assert posted <= effect.margin < posted + D(15000)
