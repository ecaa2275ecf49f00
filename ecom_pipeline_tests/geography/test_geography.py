"""Offline geography (reference data read from site-packages only) and the per-country calendar."""

import socket

import pandas as pd
import pytest

from ecom_pipeline.geography import (
    country_centroids,
    country_code,
    divisions,
    reference_file,
    resolve_locations,
    unresolved_summary,
)
from ecom_pipeline.ml.forecasting.series import calendar_features


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a socket fails: the reference data must come from installed files."""

    def refuse(*a, **k):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_reference_data_ships_inside_site_packages():
    assert "site-packages" in str(reference_file()) and reference_file().stat().st_size > 1_000_000


def test_resolution_from_what_the_data_has(no_network):
    df = pd.DataFrame(
        {
            "country": ["United Kingdom", "EIRE", "USA", None, "Unspecified", "Brazil", None, "Atlantis"],
            "state": [None, None, "CA", "SP", None, "Distrito Federal", None, None],
            "city": [None, None, "San Francisco", None, None, None, None, None],
            "zip_prefix": [None, None, "94103", "01012", None, None, None, None],
            "lat": [None, None, None, None, None, None, 40.71, None],
            "lng": [None, None, None, None, None, None, -74.0, None],
        }
    )
    r = resolve_locations(df, ())
    assert list(r["country"][:3]) == ["GB", "IE", "US"]
    assert r.loc[0, "level"] == "country" and r.loc[0, "resolution_source"] == "country"
    assert r.loc[0, "lat"] == pytest.approx(52.9, abs=1.5) and r.loc[0, "lng"] == pytest.approx(-1.9, abs=1.5)
    sf = r.loc[2]
    assert (sf["state"], sf["resolution_source"], sf["level"], sf["zip3"]) == ("CA", "city", "zip3", "941")
    assert sf["lat"] == pytest.approx(37.77, abs=0.05)
    assert (
        r.loc[5, "state"] == "DF" and r.loc[5, "resolution_source"] == "division"
    )  # GeoNames: Federal District
    ny = r.loc[6]  # coordinates only: country and division reverse-geocoded, the point itself kept
    assert (ny["country"], ny["state"], ny["resolution_source"], ny["lat"]) == (
        "US",
        "NY",
        "coordinates",
        40.71,
    )
    # nothing dropped: a SP row without any country and unknown countries are counted with a reason
    assert len(r) == len(df) and r["lat"].isna().sum() == 3
    s = unresolved_summary(r)
    assert s["unresolved"] == 3 and s["by_reason"]["unknown country"] == 2
    assert "ECOM_COUNTRY" in r.loc[3, "unresolved_reason"]
    # with the shop's country known the same SP row is placed at the São Paulo division centroid
    sp = resolve_locations(df.iloc[[3]], ("BR",)).iloc[0]
    assert (sp["country"], sp["state"], sp["level"]) == ("BR", "SP", "zip3")
    assert sp["lat"] == pytest.approx(-22.5, abs=1.5) and sp["lng"] == pytest.approx(-48.0, abs=2)
    nothing = resolve_locations(pd.DataFrame({"city": [None]}), ("GB",)).iloc[0]
    assert (nothing["country"], nothing["level"], nothing["resolution_source"]) == (
        "GB",
        "country",
        "shop_country",
    )


def test_divisions_are_real_first_level_divisions():
    us = divisions("US")
    assert len(us) == 51 and {"CA", "TX", "NY", "DC"} <= set(us["code"])
    assert list(divisions("GB").sort_values("code")["code"]) == ["ENG", "NIR", "SCT", "WLS"]
    assert len(divisions("BR")) == 27 and country_code("GBR") == "GB" and country_code("RSA") == "ZA"
    c = country_centroids()
    assert c.at["US", "lat"] == pytest.approx(39, abs=4) and c.at["US", "lng"] == pytest.approx(-92, abs=8)


def test_calendar_is_the_countrys_own():
    gb = calendar_features("2011-11-01", "2011-12-31", "GB").set_index("date")
    assert gb.loc["2011-12-26", "holiday_name"] == "Boxing Day" and gb.loc["2011-12-26", "is_boxing_day"]
    assert gb.loc["2011-11-25", "is_black_friday"] and gb.loc["2011-11-28", "is_cyber_monday"]
    assert gb.loc["2011-12-15", "christmas_runup"] and not gb["is_singles_day"].any()
    us = calendar_features("2019-11-01", "2019-11-30", "US").set_index("date")
    assert us.loc["2019-11-28", "holiday_name"] == "Thanksgiving Day" and not us["is_boxing_day"].any()
    br = calendar_features("2019-04-01", "2019-04-30", "BR").set_index("date")
    assert br.loc["2019-04-21", "holiday_name"] == "Tiradentes' Day"
    assert (
        not calendar_features("2019-04-01", "2019-04-30", "GB")["holiday_name"]
        .fillna("")
        .str.contains("Tiradentes")
        .any()
    )
    cn = calendar_features("2019-11-01", "2019-12-31", "CN").set_index("date")
    assert cn.loc["2019-11-11", "is_singles_day"] and not cn["is_black_friday"].any()
    assert not cn["christmas_runup"].any()  # Christmas is no public holiday there
    with pytest.raises(ValueError, match="no calendar for country 'XX'"):
        calendar_features("2019-01-01", "2019-01-02", "XX")


def test_multi_country_calendar_weights_customers():
    # 2019-12-26: Boxing Day (GB) / St Stephen's (IE), a normal day in the US
    cal = calendar_features("2019-12-24", "2019-12-27", ["GB", "US", "IE"], {"GB": 80, "US": 15, "IE": 5})
    day = cal.set_index("date").loc["2019-12-26"]
    assert day["holiday_share"] == pytest.approx(0.85) and day["is_holiday"] and day["is_boxing_day"]
    assert "GB: Boxing Day" in day["holiday_name"] and "US" not in day["holiday_name"]
    us_major = calendar_features("2019-12-24", "2019-12-27", ["GB", "US"], {"GB": 10, "US": 90})
    assert not us_major.set_index("date").loc["2019-12-26", "is_holiday"]


def test_order_ship_to_location_replaces_the_customers_address():
    from ecom_pipeline.ml.spatial.geo import flows, locate, order_geo

    customers = locate(
        pd.DataFrame({"customer_id": ["a", "b"], "city": ["Boston", "Denver"], "state": ["MA", "CO"]}),
        ("US",),
    )
    sellers = locate(pd.DataFrame({"seller_id": ["s"], "city": ["Chicago"], "state": ["IL"]}), ("US",))
    orders = pd.DataFrame(
        {
            "order_id": ["o1", "o2"],
            "customer_id": ["a", "b"],
            "purchased_at": pd.to_datetime(["2024-01-01", "2024-01-02"]),
            "ship_city": ["Seattle", None],
            "ship_state": ["WA", None],
        }
    )
    items = pd.DataFrame(
        {"order_id": ["o1", "o2"], "seller_id": ["s", "s"], "price": [10.0, 20.0], "freight": [1.0, 2.0]}
    )
    g = order_geo(orders, items, customers, sellers, ("US",)).set_index("order_id")
    assert g.loc["o1", "c_state"] == "WA" and g.loc["o1", "c_lat"] == pytest.approx(47.6, abs=0.1)
    assert g.loc["o2", "c_state"] == "CO"  # no ship-to: the customer's own address
    assert g.loc["o1", "distance_km"] == pytest.approx(2790, rel=0.05)  # Chicago -> Seattle
    st = flows(g.reset_index(), "state")
    assert set(zip(st["src"], st["dst"], strict=True)) == {("state:IL", "state:WA"), ("state:IL", "state:CO")}
