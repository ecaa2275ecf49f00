"""The embedded synthetic source: a seeded, deterministic Brazilian online shop that scales to millions of
orders without holding the dataset in memory.

How it stays bounded and deterministic
--------------------------------------
* Dimensions are *random access*: a customer's, seller's or product's attributes are pure functions of
  ``(seed, index)`` through a counter-based hash (SplitMix64), so an order can look up its customer's
  location without a customers table in memory.  Ids are a keyed bijection of the index (unique).
* Facts are generated per *block of days*.  Daily order counts are drawn once (``days`` numbers); the days
  are grouped into blocks of about 4,000 orders, and every block has its own numpy ``Generator`` seeded
  from ``(seed, stream, block)``.  Each fact table (orders, items, payments, reviews, events) streams over
  the blocks, regenerating the block's orders core (customers, timestamps, items, prices, delivery) and
  then only the columns it needs.  Block sizes depend only on ``n_orders`` and ``days``, so the same
  ``(seed, n_orders)`` always gives byte-identical rows, whatever ``chunk_rows`` is.
* Everything is vectorised with numpy; text columns are built from lookup tables and object-array
  concatenation.  Memory is O(one block + one chunk + catalogue (<= 20,000 products)).

What is in it
-------------
27 states with population-like weights (SP largest) and ~100 real cities with CEP ranges consistent with
the state; customers jittered around a CEP-3 centre inside their city; 20 categories with lognormal prices;
weekday/weekend, monthly and December seasonality, Black Friday (the Friday after the 4th Thursday of
November, i.e. 24 Nov 2023 and 29 Nov 2024) and the following weekend and Cyber Monday, a growth trend;
heavy-tailed repeat customers; an order lifecycle with distance-dependent delivery, estimates, late orders,
cancellations and in-flight orders at the end of the period; items, freight growing with distance and
weight; payments (credit card with installments, boleto, voucher, debit card) that sum to items + freight;
reviews whose score depends on lateness and product quality, with Portuguese (~70 %) and English (~30 %)
text composed from phrase banks; a view -> cart -> purchase clickstream with converting and browsing
sessions; regions for every state and every CEP-3 prefix in use.  Customers carry fake names, e-mails and
phones; ~3 % of review texts contain an e-mail, phone, CPF or URL.

Dirty data (``dirty_rate``, default 0.002 = 0.2 % of rows per table)
--------------------------------------------------------------------
Each block (or dimension block) draws, with its own seeded generator, which rows are dirty; every chosen
row gets exactly one defect from the table's list below (uniformly).  ``duplicate_row`` adds an *extra*
raw row (an exact copy, placed right after the original); every other kind *modifies* the row in place.

==============  =================================================================================
customers       duplicate_row, coords_out_of_bounds (lat/lng "0.000000" - outside Brazil)
sellers         duplicate_row
products        duplicate_row, negative_price
orders          duplicate_row, missing_customer_id (NULL), unparseable_timestamp (purchased_at with
                day 32, e.g. "2024-05-32 14:03:11"), approved_before_purchase (approved_at 2 h before)
order_items     duplicate_row, negative_price
payments        duplicate_row, negative_value
reviews         duplicate_row, score_out_of_range (0 or 6)
events          duplicate_row, unknown_event_type ("click"), missing_customer_id (NULL)
regions         none (reference data)
==============  =================================================================================

``dirty_rate=0`` gives a clean dataset.  The realism statistics (seasonality, lateness, funnel) are the
same either way; dirty rows are applied after generation and never change the clean rows around them.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Iterator
from datetime import date, timedelta
from functools import cached_property
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from ecom_pipeline.canonical import TABLES, ParseHints
from ecom_pipeline.sources import synthetic_geo as geo
from ecom_pipeline.sources import synthetic_text as txt
from ecom_pipeline.sources.base import DEFAULT_CHUNK_ROWS, Source

__all__ = ["SyntheticSource", "black_friday"]

_DAY = 86400
_HOUR = 3600
SHIP_TO_COLUMNS = ("ship_city", "ship_state", "ship_postal_code", "ship_country", "ship_lat", "ship_lng")
_S = np.strings if hasattr(np, "strings") else np.char  # vectorised string functions (numpy >= 2 / 1.x)

# ---------------------------------------------------------------------------------------------- hashing
_MASK = (1 << 64) - 1
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)


def _mix_int(x: int) -> int:
    x &= _MASK
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _MASK
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a bijection on uint64 (so distinct inputs give distinct outputs)."""
    x = np.array(x, dtype=np.uint64, copy=True)
    x ^= x >> _S30
    x *= _M1
    x ^= x >> _S27
    x *= _M2
    x ^= x >> _S31
    return x


def _crc(name: str) -> int:
    return zlib.crc32(name.encode())


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8).astype(np.uint32)
# Byte value -> its two hex digits as UCS4 code points (numpy "U" arrays store native uint32 per char).
_HEX_PAIRS = np.stack([_HEX[np.arange(256) >> 4], _HEX[np.arange(256) & 15]], axis=1)


def _hex16(x: np.ndarray) -> np.ndarray:
    """uint64 -> 16 lower-case hex characters, as an object array of str."""
    x = np.asarray(x, dtype=np.uint64)
    if len(x) == 0:
        return np.empty(0, dtype=object)
    big_endian_bytes = x.astype(">u8").view(np.uint8).reshape(-1, 8)
    codes = np.ascontiguousarray(_HEX_PAIRS[big_endian_bytes]).reshape(len(x), 16)
    return codes.view("U16").ravel().astype(object)


# ---------------------------------------------------------------------------------------------- formatting
_TIME_CODES: np.ndarray | None = None


def _time_codes() -> np.ndarray:
    """(86400, 9) UCS4 code points of ' HH:MM:SS' for every second of a day."""
    global _TIME_CODES
    if _TIME_CODES is None:
        sod = np.arange(_DAY)
        text = _S.add(" ", _pad(sod // 3600, 2))
        for part in (sod // 60 % 60, sod % 60):
            text = _S.add(_S.add(text, ":"), _pad(part, 2))
        _TIME_CODES = np.ascontiguousarray(text.astype("U9")).view(np.uint32).reshape(_DAY, 9)
    return _TIME_CODES


def _fmt_ts(ts: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Epoch seconds -> 'YYYY-MM-DD HH:MM:SS' (object array); rows where ``valid`` is False become None."""
    ts = np.asarray(ts, dtype=np.int64)
    if valid is not None and not valid.all():
        out = np.full(len(ts), None, dtype=object)
        if valid.any():
            out[valid] = _fmt_ts(ts[valid])
        return out
    if len(ts) == 0:
        return np.empty(0, dtype=object)
    day = ts // _DAY
    d0 = int(day.min())
    dates = np.datetime_as_string(np.arange(d0, int(day.max()) + 1).astype("datetime64[D]")).astype("U10")
    codes = np.empty((len(ts), 19), dtype=np.uint32)
    codes[:, :10] = np.ascontiguousarray(dates).view(np.uint32).reshape(-1, 10)[day - d0]
    codes[:, 10:] = _time_codes()[ts - day * _DAY]
    return codes.view("U19").ravel().astype(object)


def _fmt_fixed(x: np.ndarray, decimals: int) -> np.ndarray:
    """Floats -> fixed-point text with ``decimals`` digits (object array of str)."""
    scale = 10**decimals
    return _fmt_scaled(np.rint(np.asarray(x, dtype=np.float64) * scale).astype(np.int64), decimals)


def _fmt_scaled(v: np.ndarray, decimals: int) -> np.ndarray:
    """Integers in units of 10**-decimals (e.g. cents) -> '123.45' (object array of str)."""
    v = np.asarray(v, dtype=np.int64)
    if len(v) == 0:
        return np.empty(0, dtype=object)
    scale = 10**decimals
    a = np.abs(v)
    s = _S.add(_S.add((a // scale).astype(str), "."), _S.zfill((a % scale).astype(str), decimals))
    neg = v < 0
    if neg.any():
        s = np.where(neg, _S.add("-", s), s)
    return s.astype(object)


def _fmt_int(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.int64)
    return v.astype(str).astype(object) if len(v) else np.empty(0, dtype=object)


def _pad(v: np.ndarray, width: int) -> np.ndarray:
    """Non-negative ints -> zero-padded text as a numpy unicode array (for further np.strings ops)."""
    return _S.zfill(np.asarray(v, dtype=np.int64).astype(str), width)


def _haversine_km(lat1, lng1, lat2, lng2) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(np.asarray(lng2) - np.asarray(lng1))
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * 6371.0 * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def _segment_positions(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For groups of the given lengths: (group index, position inside the group) per element."""
    lengths = np.asarray(lengths, dtype=np.int64)
    group = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.cumsum(lengths) - lengths
    return group, np.arange(len(group)) - starts[group]


# ---------------------------------------------------------------------------------------------- geography
class _Geo:
    """Arrays over the states and cities of a :mod:`synthetic_geo` country profile (seed independent)."""

    def __init__(self, prof: geo.CountryProfile) -> None:
        self.profile = prof
        st = prof.states
        self.state_code = np.array([s[0] for s in st], dtype=object)
        self.state_name = np.array([s[1] for s in st], dtype=object)
        self.state_lat = np.array([s[4] for s in st])
        self.state_lng = np.array([s[5] for s in st])
        index = {s[0]: i for i, s in enumerate(st)}
        ci = prof.cities
        self.city_state = np.array([index[c[0]] for c in ci])
        self.city_name = np.array([c[1] for c in ci], dtype=object)
        self.city_lat = np.array([c[2] for c in ci])
        self.city_lng = np.array([c[3] for c in ci])
        self.city_lo = np.array([c[4] for c in ci], dtype=np.int64)
        self.city_hi = np.array([c[5] for c in ci], dtype=np.int64)
        self.city_ddd = np.array([c[6] for c in ci], dtype=np.int64)
        self.city_z3_lo = self.city_lo // 100
        self.city_n_z3 = self.city_hi // 100 - self.city_z3_lo + 1
        # Spread of CEP-3 centres around the city centre grows with the city's number of prefixes.
        self.city_radius = 0.02 + 0.012 * np.sqrt(self.city_n_z3)
        city_w = np.array([c[7] for c in ci])
        within = city_w / np.bincount(self.city_state, weights=city_w)[self.city_state]
        pop = np.array([s[3] for s in st])
        factor = np.array([prof.state_override.get(s[0], prof.ecommerce_factor[s[2]]) for s in st])
        cust_w = (pop * factor)[self.city_state] * within
        self.customer_city_cdf = np.cumsum(cust_w) / cust_w.sum()
        seller_share = np.array([prof.seller_state_share.get(s[0], 0.002) for s in st])
        sel_w = seller_share[self.city_state] * within
        self.seller_city_cdf = np.cumsum(sel_w) / sel_w.sum()
        # Every CEP-3 prefix belongs to exactly one city (checked by the tests).
        self.zip3_city: dict[int, int] = {}
        for c in range(len(ci)):
            for z in range(int(self.city_z3_lo[c]), int(self.city_z3_lo[c] + self.city_n_z3[c])):
                self.zip3_city.setdefault(z, c)

    def zip3_centre(self, city: np.ndarray, zip3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fixed (seed independent) centre of a CEP-3 area: a point inside the city's radius."""
        base = np.asarray(zip3, dtype=np.uint64) * _GOLD
        u1 = (_mix64(base + np.uint64(0x5EED01)) >> _S11).astype(np.float64) / 2.0**53
        u2 = (_mix64(base + np.uint64(0x5EED02)) >> _S11).astype(np.float64) / 2.0**53
        r = self.city_radius[city] * np.sqrt(u1)
        lat = self.city_lat[city] + r * np.cos(2 * np.pi * u2)
        lng = self.city_lng[city] + r * np.sin(2 * np.pi * u2) / np.cos(np.radians(self.city_lat[city]))
        return lat, lng


_GEO: dict[str, _Geo] = {}


def _geo(country: str = "BR") -> _Geo:
    if country not in _GEO:
        _GEO[country] = _Geo(geo.profile(country))
    return _GEO[country]


# ---------------------------------------------------------------------------------------------- phrase banks
class _Bank:
    """A flattened phrase bank: groups of phrases, each phrase split around its one placeholder."""

    SLOTS: ClassVar[dict[str, int]] = {"{noun}": 1, "{Noun}": 2, "{days}": 3}

    def __init__(self, groups: dict[tuple, tuple[str, ...]]):
        self.gid = {k: i for i, k in enumerate(groups)}
        pre, post, slot, off, size = [], [], [], [], []
        for phrases in groups.values():
            off.append(len(pre))
            size.append(len(phrases))
            for phrase in phrases:
                found = [(phrase.index(p), p) for p in self.SLOTS if p in phrase]
                if found:
                    i, p = found[0]
                    pre.append(phrase[:i])
                    post.append(phrase[i + len(p) :])
                    slot.append(self.SLOTS[p])
                else:
                    pre.append(phrase)
                    post.append("")
                    slot.append(0)
        self.pre = np.array(pre, dtype=object)
        self.post = np.array(post, dtype=object)
        self.slot = np.array(slot)
        self.off = np.array(off)
        self.size = np.array(size)

    def render(self, gid: np.ndarray, u: np.ndarray, noun, noun_cap, days) -> np.ndarray:
        idx = self.off[gid] + np.minimum((u * self.size[gid]).astype(np.int64), self.size[gid] - 1)
        slot = self.slot[idx]
        val = np.full(len(idx), "", dtype=object)
        for code, values in ((1, noun), (2, noun_cap), (3, days)):
            m = slot == code
            if m.any():
                val[m] = values[m]
        return self.pre[idx] + val + self.post[idx]


_LANGS = ("pt", "en")
_BUCKETS = ("neg", "neu", "pos")
_DELIVERY_KINDS = ("ontime", "ontime_neg", "late", "late_pos", "undelivered")
_BANKS: dict[str, _Bank] | None = None


def _banks() -> dict[str, _Bank]:
    global _BANKS
    if _BANKS is None:
        _BANKS = {
            "opening": _Bank({(lg, s): txt.OPENINGS[lg][s] for lg in _LANGS for s in range(5)}),
            "title": _Bank(
                {(lg, s): txt.TITLES[lg][s] for lg in _LANGS for s in range(5)}
                | {(lg, 5): txt.NOT_DELIVERED_TITLES[lg] for lg in _LANGS}
            ),
            "product": _Bank({(lg, b): txt.PRODUCT_ASPECTS[lg][b] for lg in _LANGS for b in _BUCKETS}),
            "delivery": _Bank(
                {(lg, k): txt.DELIVERY_ASPECTS[lg][k] for lg in _LANGS for k in _DELIVERY_KINDS}
            ),
            "closing": _Bank({(lg, b): txt.CLOSINGS[lg][b] for lg in _LANGS for b in _BUCKETS}),
        }
    return _BANKS


def _ascii_fold(s: str) -> str:
    import unicodedata

    return unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode().lower()


def _cpf(n9: int) -> str:
    """A CPF with valid check digits for the 9-digit base ``n9`` (fake but well-formed)."""
    d = [int(c) for c in f"{n9:09d}"]
    for k in (10, 11):
        s = sum(v * w for v, w in zip(d, range(k, 1, -1)))
        r = (s * 10) % 11
        d.append(0 if r == 10 else r)
    s = "".join(map(str, d))
    return f"{s[:3]}.{s[3:6]}.{s[6:9]}-{s[9:]}"


_NAME_VOCAB: dict | None = None


def _name_vocab() -> dict:
    """Name lists (Brazilian then English) as object arrays, with ASCII-folded forms for e-mails."""
    global _NAME_VOCAB
    if _NAME_VOCAB is None:
        first = (*txt.FIRST_NAMES_BR, *txt.FIRST_NAMES_EN)
        last = (*txt.LAST_NAMES_BR, *txt.LAST_NAMES_EN)
        _NAME_VOCAB = {
            "first": np.array(first, dtype=object),
            "last": np.array(last, dtype=object),
            "first_ascii": np.array([_ascii_fold(x) for x in first], dtype=object),
            "last_ascii": np.array([_ascii_fold(x) for x in last], dtype=object),
            "first_initial": np.array([_ascii_fold(x)[:1] for x in first], dtype=object),
            "domains": np.array(txt.EMAIL_DOMAINS, dtype=object),
        }
    return _NAME_VOCAB


# ---------------------------------------------------------------------------------------------- calendar
_WEEKDAY_FACTOR = np.array([1.10, 1.12, 1.08, 1.04, 0.98, 0.80, 0.88])  # Monday .. Sunday
_MONTH_FACTOR = np.array([0.92, 0.88, 0.97, 0.95, 1.05, 0.98, 0.97, 1.02, 0.97, 1.00, 1.06, 1.15])
_YEARLY_GROWTH = 1.35
# Purchases per local (UTC-3, Brasília) hour, turned into UTC hours below.
_LOCAL_HOUR_PROFILE = np.array(
    [
        0.30,
        0.15,
        0.08,
        0.05,
        0.04,
        0.06,
        0.15,
        0.35,
        0.70,
        1.00,
        1.20,
        1.25,
        1.20,
        1.25,
        1.35,
        1.35,
        1.30,
        1.25,
        1.20,
        1.25,
        1.40,
        1.45,
        1.25,
        0.75,
    ]
)
_UTC_HOUR_CDF = np.cumsum(np.roll(_LOCAL_HOUR_PROFILE, 3)) / _LOCAL_HOUR_PROFILE.sum()


def black_friday(year: int) -> date:
    """Brazilian Black Friday: the Friday after the fourth Thursday of November (US Thanksgiving)."""
    nov1 = date(year, 11, 1)
    first_thu = nov1 + timedelta(days=(3 - nov1.weekday()) % 7)
    return first_thu + timedelta(days=22)


def _special_days(year: int, country: str = "BR") -> dict[date, float]:
    out: dict[date, float] = {}
    bf = black_friday(year)
    for k in range(-11, -4):
        out[bf + timedelta(days=k)] = 0.92  # customers wait for Black Friday
    for k in range(-4, -1):
        out[bf + timedelta(days=k)] = 1.15  # "esquenta Black Friday"
    out[bf - timedelta(days=1)] = 1.4
    out[bf] = 3.4
    out[bf + timedelta(days=1)] = 2.0
    out[bf + timedelta(days=2)] = 1.6
    out[bf + timedelta(days=3)] = 2.1  # Cyber Monday
    may1 = date(year, 5, 1)
    mothers_day = may1 + timedelta(days=(6 - may1.weekday()) % 7 + 7)
    for k in range(1, 11):
        out[mothers_day - timedelta(days=k)] = 1.15
    if country == "BR":
        for d in range(1, 12):
            out[date(year, 6, d)] = 1.10  # Dia dos Namorados (12 June)
            out[date(year, 10, d)] = 1.10  # Dia das Crianças (12 October)
        out[date(year, 3, 15)] = 1.30  # Dia do Consumidor
    else:
        out[bf - timedelta(days=1)] = 0.7  # US Thanksgiving: shops and shoppers at home
    for d in range(1, 21):
        out[date(year, 12, d)] = 1.0 + 0.30 * d / 20
    out.update(
        {
            date(year, 12, 21): 1.3,
            date(year, 12, 22): 1.3,
            date(year, 12, 23): 1.25,
            date(year, 12, 24): 0.8,
            date(year, 12, 25): 0.45,
            date(year, 12, 31): 0.6,
            date(year, 1, 1): 0.5,
        }
    )
    for d in range(26, 31):
        out[date(year, 12, d)] = 0.9
    return out


# ---------------------------------------------------------------------------------------------- the source


class SyntheticSource(Source):
    """Seeded synthetic Brazilian online shop producing all nine canonical tables (see module docstring)."""

    name = "synthetic"

    DIRTY_KINDS: ClassVar[dict[str, tuple[str, ...]]] = {
        "customers": ("duplicate_row", "coords_out_of_bounds"),
        "sellers": ("duplicate_row",),
        "products": ("duplicate_row", "negative_price"),
        "orders": (
            "duplicate_row",
            "missing_customer_id",
            "unparseable_timestamp",
            "approved_before_purchase",
        ),
        "order_items": ("duplicate_row", "negative_price"),
        "payments": ("duplicate_row", "negative_value"),
        "reviews": ("duplicate_row", "score_out_of_range"),
        "events": ("duplicate_row", "unknown_event_type", "missing_customer_id"),
        "regions": (),
    }
    ORDERS_PER_BLOCK = 4000
    DIMENSION_BLOCK = 50_000

    def __init__(
        self,
        n_orders: int = 5000,
        seed: int = 42,
        image_dir: Path | str | None = None,
        *,
        days: int = 731,
        end_date: str | date = "2024-12-31",
        dirty_rate: float = 0.002,
        write_images: bool = True,
        country: str = "BR",
    ) -> None:
        if int(n_orders) < 0:
            raise ValueError("n_orders must be >= 0")
        if int(days) < 1:
            raise ValueError("days must be >= 1")
        if not 0.0 <= float(dirty_rate) <= 0.5:
            raise ValueError("dirty_rate must be between 0 and 0.5")
        self.country = country.upper()
        self._geo = _geo(self.country)  # fails early with the supported profiles
        self.n_orders = int(n_orders)
        self.seed = int(seed) & _MASK
        self.days = int(days)
        self.end_date = end_date if type(end_date) is date else date.fromisoformat(str(end_date)[:10])
        self.start_date = self.end_date - timedelta(days=self.days - 1)
        self.dirty_rate = float(dirty_rate)
        self.image_dir = Path(image_dir) if image_dir is not None else None
        self.write_images = write_images
        self.n_products = min(20_000, 200 + self.n_orders // 25)
        self.n_sellers = max(5, self.n_products // 10)
        self._start_ts = int(np.datetime64(self.start_date, "s").astype(np.int64))
        self._end_ts = int(np.datetime64(self.end_date, "s").astype(np.int64)) + _DAY - 1

    # ------------------------------------------------------------------------------------ Source API
    def tables(self) -> set[str]:
        return set(TABLES)

    def parse_hints(self, table: str) -> ParseHints:
        return ParseHints(geo_bounds=self._geo.profile.geo_bounds)

    def describe(self) -> dict:
        return {
            "source": self.name,
            "seed": self.seed,
            "n_orders": self.n_orders,
            "start_date": self.start_date.isoformat(),
            "end_date": self.end_date.isoformat(),
            "days": self.days,
            "customers": self.n_customers,
            "products": self.n_products,
            "sellers": self.n_sellers,
            "country": self.country,
            "states": len(self._geo.profile.states),
            "cities": len(self._geo.profile.cities),
            "dirty_rate": self.dirty_rate,
            "image_dir": str(self.image_dir) if self.image_dir is not None else None,
            "blocks": len(self._cal["blocks"]),
            "approx_rows": {
                "order_items": round(1.18 * self.n_orders),
                "payments": round(1.035 * self.n_orders),
                "reviews": round(0.89 * self.n_orders),
                "events": round(12 * self.n_orders),
            },
        }

    def source_file(self, table: str) -> str:
        return f"synthetic://{table}?seed={self.seed}&n={self.n_orders}"

    def read(self, table: str, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[pd.DataFrame]:
        self.check_table(table)
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be >= 1")
        producer = {
            "customers": self._customer_blocks,
            "sellers": self._seller_blocks,
            "products": self._product_blocks,
            "orders": self._order_blocks,
            "order_items": self._item_blocks,
            "payments": self._payment_blocks,
            "reviews": self._review_blocks,
            "events": self._event_blocks,
            "regions": self._region_blocks,
        }[table]

        def dirty_blocks():
            for b, cols in producer():
                yield self._apply_dirty(table, cols, b)

        for cols in _rechunk(dirty_blocks(), chunk_rows):
            frame = self._frame(table, cols)
            if table == "products":
                self._ensure_images(frame)
            yield frame

    # ------------------------------------------------------------------------------------ randomness
    def _rng(self, stream: str, block: int = 0) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, _crc(stream), block])))

    def _key(self, stream: str) -> np.uint64:
        return np.uint64(_mix_int(self.seed * 0x9E3779B97F4A7C15 + _crc(stream) * 0xD1B54A32D192ED03))

    def _u(self, idx: np.ndarray, stream: str) -> np.ndarray:
        """Uniform [0, 1) per index, a pure function of (seed, stream, index)."""
        h = _mix64(np.asarray(idx).astype(np.uint64) * _GOLD + self._key(stream))
        return (h >> _S11).astype(np.float64) * (1.0 / 2.0**53)

    def _normal(self, idx: np.ndarray, stream: str) -> np.ndarray:
        u1 = 1.0 - self._u(idx, stream + ".a")
        u2 = self._u(idx, stream + ".b")
        return np.sqrt(-2.0 * np.log(u1)) * np.cos(2 * np.pi * u2)

    def _ids(self, idx: np.ndarray, kind: str) -> np.ndarray:
        return _hex16(_mix64(np.asarray(idx).astype(np.uint64) + self._key("id." + kind)))

    # ------------------------------------------------------------------------------------ calendar
    @cached_property
    def _cal(self) -> dict:
        days = self.days
        start = np.datetime64(self.start_date, "D")
        dates = start + np.arange(days)
        epoch_day = dates.astype(np.int64)
        month = dates.astype("datetime64[M]").astype(np.int64) % 12 + 1
        weekday = (epoch_day + 3) % 7  # 1970-01-01 was a Thursday
        w = _WEEKDAY_FACTOR[weekday] * _MONTH_FACTOR[month - 1] * _YEARLY_GROWTH ** (np.arange(days) / 365.0)
        special: dict[date, float] = {}
        for y in range(self.start_date.year, self.end_date.year + 1):
            special.update(_special_days(y, self.country))
        for i in range(days):
            w[i] *= special.get(self.start_date + timedelta(days=i), 1.0)
        rng = self._rng("calendar")
        w = w * rng.lognormal(0.0, 0.08, days)
        counts = rng.multinomial(self.n_orders, w / w.sum()) if self.n_orders else np.zeros(days, np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        casual = rng.binomial(counts, self.CASUAL_SHARE)
        casual_offsets = np.concatenate([[0], np.cumsum(casual)])
        block_days = int(min(days, max(1, math.ceil(self.ORDERS_PER_BLOCK * days / max(self.n_orders, 1)))))
        blocks = [(d0, min(days, d0 + block_days)) for d0 in range(0, days, block_days)]
        return {
            "epoch_day": epoch_day,
            "month": month,
            "weekday": weekday,
            "counts": counts,
            "offsets": offsets,
            "casual": casual,
            "casual_offsets": casual_offsets,
            "n_casual": int(casual.sum()),
            "blocks": blocks,
            "weights": w,
        }

    def daily_order_counts(self) -> pd.Series:
        """Orders per (UTC purchase) day as planned by the calendar (before dirty rows)."""
        cal = self._cal
        return pd.Series(cal["counts"], index=pd.to_datetime(cal["epoch_day"], unit="D"), name="orders")

    def _sod(self, rng: np.random.Generator, n: int) -> np.ndarray:
        hour = np.minimum(np.searchsorted(_UTC_HOUR_CDF, rng.random(n), side="right"), 23)
        return hour * _HOUR + rng.integers(0, _HOUR, n)

    def _is_black_week(self, epoch_day: np.ndarray) -> np.ndarray:
        out = np.zeros(len(epoch_day), dtype=bool)
        for y in range(self.start_date.year, self.end_date.year + 1):
            bf = int(np.datetime64(black_friday(y), "D").astype(np.int64))
            out |= (epoch_day >= bf) & (epoch_day <= bf + 3)
        return out

    # ------------------------------------------------------------------------------------ dimensions
    def _place(self, idx: np.ndarray, kind: str, cdf: np.ndarray) -> dict:
        g = self._geo
        idx = np.asarray(idx, dtype=np.int64)
        city = np.minimum(np.searchsorted(cdf, self._u(idx, kind + ".city"), side="right"), len(cdf) - 1)
        zip3 = g.city_z3_lo[city] + (self._u(idx, kind + ".zip3") * g.city_n_z3[city]).astype(np.int64)
        lo5 = np.maximum(g.city_lo[city], zip3 * 100)
        hi5 = np.minimum(g.city_hi[city], zip3 * 100 + 99)
        zip5 = lo5 + (self._u(idx, kind + ".zip5") * (hi5 - lo5 + 1)).astype(np.int64)
        clat, clng = g.zip3_centre(city, zip3)
        lat = clat + 0.015 * self._normal(idx, kind + ".lat")
        lng = clng + 0.015 * self._normal(idx, kind + ".lng")
        return {"city": city, "zip3": zip3, "zip5": zip5, "lat": lat, "lng": lng}

    def _customer_place(self, cidx: np.ndarray) -> dict:
        return self._place(cidx, "customer", self._geo.customer_city_cdf)

    @cached_property
    def _sellers(self) -> dict:
        idx = np.arange(self.n_sellers)
        return self._place(idx, "seller", self._geo.seller_city_cdf)

    def _affine_perm(self, n: int, salt: int) -> tuple[int, int]:
        """(a, c) of the bijection x -> (a*x + c) mod n that scatters ranks over indices."""
        a = max(1, int(n * 0.6180339887)) | 1
        while math.gcd(a, n) != 1:
            a += 2
        return a, _mix_int(self.seed + salt) % n

    # Customers: ~0.6 per order.  Index range [0, n_casual) are one-time buyers, one per "casual" order in
    # time order (so they buy exactly once); [n_casual, n_customers) is a loyal pool that places the other
    # orders with lognormal propensities (a few customers buy dozens of times).
    CUSTOMERS_PER_ORDER = 0.6
    CASUAL_SHARE = 0.45
    LOYAL_SIGMA = 0.6

    @property
    def n_customers(self) -> int:
        return self._cal["n_casual"] + self._n_loyal

    @property
    def _n_loyal(self) -> int:
        return max(1, round(self.CUSTOMERS_PER_ORDER * self.n_orders) - self._cal["n_casual"])

    @cached_property
    def _loyal_cum(self) -> np.ndarray:
        w = np.exp(self.LOYAL_SIGMA * self._normal(np.arange(self._n_loyal), "cust.loyalty"))
        return np.cumsum(w)

    def _sample_loyal(self, u: np.ndarray) -> np.ndarray:
        cum = self._loyal_cum
        pos = np.minimum(np.searchsorted(cum, u * cum[-1], side="right"), len(cum) - 1)
        return self._cal["n_casual"] + pos

    def _sample_browsers(self, rng: np.random.Generator, n_draws: int) -> np.ndarray:
        """Customers of browsing sessions: half anyone, half weighted by loyalty."""
        anyone = (rng.random(n_draws) * self.n_customers).astype(np.int64)
        loyal = self._sample_loyal(rng.random(n_draws))
        return np.where(rng.random(n_draws) < 0.5, anyone, loyal)

    @cached_property
    def _catalog(self) -> dict:
        n = self.n_products
        idx = np.arange(n)
        cats = txt.CATEGORIES
        share = np.array([c[1] for c in cats])
        cat = np.minimum(
            np.searchsorted(np.cumsum(share) / share.sum(), self._u(idx, "prod.cat"), side="right"),
            len(cats) - 1,
        )
        cat[: min(n, len(cats))] = np.arange(min(n, len(cats)))  # every category has products
        n_types = np.array([len(txt.PRODUCT_TYPES[c[0]]) for c in cats])
        ptype = (self._u(idx, "prod.type") * n_types[cat]).astype(np.int64)
        median = np.array([c[2] for c in cats])[cat]
        sigma = np.array([c[3] for c in cats])[cat]
        price = median * np.exp(sigma * self._normal(idx, "prod.price"))
        price = np.clip(price, 6.0, 6000.0)
        cents = np.rint(price * 100).astype(np.int64)
        psych = self._u(idx, "prod.psych") < 0.6
        cents = np.where(psych, np.maximum(590, (cents // 100) * 100 + 90), cents)  # R$ 89,90
        weight = np.array([c[4] for c in cats])[cat] * np.exp(0.5 * self._normal(idx, "prod.weight"))
        weight_g = np.maximum(50, np.rint(weight / 10) * 10).astype(np.int64)
        side = np.cbrt(weight_g / 0.25)  # ~0.25 g/cm3 packed density
        dims = np.maximum(
            5,
            np.rint(
                side[:, None]
                * np.exp(0.35 * np.stack([self._normal(idx, f"prod.dim{k}") for k in range(3)], axis=1))
            ),
        ).astype(np.int64)
        color_cdf = np.cumsum(txt.COLOR_WEIGHTS) / sum(txt.COLOR_WEIGHTS)
        color = np.minimum(
            np.searchsorted(color_cdf, self._u(idx, "prod.color"), side="right"), len(color_cdf) - 1
        )
        popularity = np.exp(1.1 * self._normal(idx, "prod.pop"))
        quality = self._normal(idx, "prod.quality")
        s_pos = (self.n_sellers * self._u(idx, "prod.seller") ** 2.0).astype(np.int64)
        a, c0 = self._affine_perm(self.n_sellers, 3)
        seller = (np.minimum(s_pos, self.n_sellers - 1) * a + c0) % self.n_sellers
        # Sampling structure: products sorted by category with cumulative popularity.
        order = np.argsort(cat, kind="stable")
        cum = np.cumsum(popularity[order])
        cat_start = np.searchsorted(cat[order], np.arange(len(cats)), side="left")
        cat_end = np.searchsorted(cat[order], np.arange(len(cats)), side="right")
        w_lo = np.where(cat_start > 0, cum[np.maximum(cat_start - 1, 0)], 0.0)
        w_hi = cum[np.maximum(cat_end - 1, 0)]
        # Month-dependent category mix.
        season = np.ones((12, len(cats)))
        for j, c in enumerate(cats):
            for m, f in txt.CATEGORY_SEASON.get(c[0], {}).items():
                season[m - 1, j] = f
        mix = share[None, :] * season
        cat_cdf = np.cumsum(mix, axis=1) / mix.sum(axis=1, keepdims=True)
        nouns_pt, nouns_en = [], []
        type_offset = np.concatenate([[0], np.cumsum(n_types)])
        for c in cats:
            for t in txt.PRODUCT_TYPES[c[0]]:
                nouns_pt.append(t[1])
                nouns_en.append(t[2])
        flat_type = type_offset[cat] + ptype
        return {
            "cat": cat,
            "ptype": ptype,
            "cents": cents,
            "weight_g": weight_g,
            "dims": dims,
            "color": color,
            "quality": quality,
            "seller": seller,
            "order": order,
            "cum": cum,
            "cat_start": cat_start,
            "cat_end": cat_end,
            "w_lo": w_lo,
            "w_hi": w_hi,
            "cat_cdf": cat_cdf,
            "noun_pt": np.array(nouns_pt, dtype=object)[flat_type],
            "noun_en": np.array(nouns_en, dtype=object)[flat_type],
            "ids": self._ids(idx, "product"),
        }

    def _pick_category(self, month: np.ndarray, u: np.ndarray) -> np.ndarray:
        cdf = self._catalog["cat_cdf"][month - 1]
        return np.minimum((u[:, None] >= cdf).sum(axis=1), cdf.shape[1] - 1)

    def _pick_product(self, cat: np.ndarray, u: np.ndarray) -> np.ndarray:
        c = self._catalog
        lo, hi = c["w_lo"][cat], c["w_hi"][cat]
        pos = np.searchsorted(c["cum"], lo + u * (hi - lo), side="right")
        pos = np.clip(pos, c["cat_start"][cat], c["cat_end"][cat] - 1)
        return c["order"][pos]

    # ------------------------------------------------------------------------------------ orders core
    def _core(self, b: int) -> dict:
        """Everything about block ``b``'s orders and items (numeric arrays)."""
        cal = self._cal
        d0, d1 = cal["blocks"][b]
        counts = cal["counts"][d0:d1]
        n = int(counts.sum())
        rng = self._rng("core", b)
        day = np.repeat(np.arange(d0, d1), counts)
        ts = cal["epoch_day"][day] * _DAY + self._sod(rng, n)
        order = np.argsort(ts, kind="stable")
        ts, day = ts[order], day[order]
        oidx = cal["offsets"][d0] + np.arange(n)
        month = cal["month"][day]
        n_casual = int(cal["casual"][d0:d1].sum())
        is_casual = np.zeros(n, dtype=bool)
        is_casual[rng.permutation(n)[:n_casual]] = True
        casual_rank = cal["casual_offsets"][d0] + np.cumsum(is_casual) - 1
        cust = np.where(is_casual, casual_rank, self._sample_loyal(rng.random(n)))
        place = self._customer_place(cust)

        # Items: 1-3 per order; later items repeat the first product, stay in its category or not.
        n_items = 1 + np.searchsorted([0.86, 0.96], rng.random(n), side="right")
        item_order, item_pos = _segment_positions(n_items)
        m = len(item_order)
        cat_first = self._pick_category(month, rng.random(n))
        prod_first = self._pick_product(cat_first, rng.random(n))
        r = rng.random(m)
        cat_other = np.where(
            r < 0.75, cat_first[item_order], self._pick_category(month[item_order], rng.random(m))
        )
        prod = self._pick_product(cat_other, rng.random(m))
        prod = np.where((item_pos == 0) | (r < 0.30), prod_first[item_order], prod)
        c = self._catalog
        qty = 1 + np.searchsorted([0.95, 0.99], rng.random(m), side="right")
        factor = np.where(rng.random(m) < 0.65, 1.0, rng.uniform(0.85, 1.08, m))
        black = self._is_black_week(cal["epoch_day"][day])[item_order]
        factor = np.where(black, factor * rng.uniform(0.70, 0.92, m), factor)
        price = np.maximum(100, np.rint(c["cents"][prod] * factor)).astype(np.int64)
        seller = c["seller"][prod]
        sel = self._sellers
        dist = _haversine_km(
            place["lat"][item_order], place["lng"][item_order], sel["lat"][seller], sel["lng"][seller]
        )
        kg = c["weight_g"][prod] * qty / 1000.0
        freight = (6.5 + 2.0 * kg**0.8 + 0.0085 * dist) * rng.lognormal(0.0, 0.12, m)
        freight = np.where(rng.random(m) < 0.04, 0.0, freight)
        freight = np.rint(freight * 100).astype(np.int64)
        starts = np.cumsum(n_items) - n_items
        order_dist = np.maximum.reduceat(dist, starts) if n else np.zeros(0)
        total = np.add.reduceat(price * qty + freight, starts) if n else np.zeros(0, np.int64)

        # Payment type decides how fast the order is approved.
        ptype = np.searchsorted(
            np.cumsum([0.75, 0.195, 0.04]), rng.random(n), side="right"
        )  # cc, boleto, voucher, debit
        voucher_split = (rng.random(n) < 0.035) & (ptype != 2) & (total > 2000)
        approve_delay = np.where(
            ptype == 1,
            rng.uniform(0.3, 3.0, n) * _DAY,
            np.minimum(rng.lognormal(np.log(600), 1.2, n), 2 * _DAY),
        )
        approved = ts + approve_delay.astype(np.int64)
        u_status = rng.random(n)
        canceled = ((ptype == 1) & (u_status < 0.04)) | ((ptype != 1) & (u_status < 0.005))
        unpaid = canceled & (ptype == 1)
        unavailable = ~canceled & (u_status > 0.996)

        # Delivery: handling + transit growing with distance; slower in the Nov/Dec peak.
        edays = cal["epoch_day"][day]
        peak = (month == 12) | self._is_black_week(edays) | self._is_black_week(edays - 4)
        handling = rng.gamma(2.0, 0.9, n) + np.where(cal["weekday"][day] >= 5, 1.0, 0.0)
        transit = 1.0 + order_dist / 450.0 + rng.gamma(1.5, 1.0 + order_dist / 1500.0, n)
        slow = np.where(peak, rng.uniform(1.1, 1.6, n), 1.0)
        trouble = np.where(rng.random(n) < 0.03, rng.uniform(5, 20, n), 0.0)  # carrier problems
        deliver_days = (handling + transit) * slow + trouble
        delivered = approved + (deliver_days * _DAY).astype(np.int64)
        dday = delivered // _DAY
        delivered = dday * _DAY + 11 * _HOUR + (rng.random(n) * 11 * _HOUR).astype(np.int64)  # 08-19 local
        delivered = np.maximum(delivered, approved + _HOUR)
        expected = 2.8 + 1.0 + order_dist / 450.0 + 1.5 * (1.0 + order_dist / 1500.0)
        est_days = np.ceil(2.0 + 1.25 * expected + rng.integers(0, 4, n)).astype(np.int64)
        estimated = (edays + est_days) * _DAY  # a date, at 00:00:00 like Olist
        lost = rng.random(n) < 0.006
        end = self._end_ts
        shipped_at = approved + (handling * _DAY).astype(np.int64)
        status = np.full(n, "delivered", dtype=object)
        is_delivered = ~canceled & ~unavailable & ~lost & (delivered <= end)
        status[~is_delivered] = "shipped"
        inflight = ~canceled & ~unavailable & (shipped_at > end)
        status[inflight] = np.where(rng.random(int(inflight.sum())) < 0.5, "processing", "invoiced")
        status[canceled] = "canceled"
        status[unavailable] = "unavailable"
        has_approved = ~unpaid & (approved <= end)
        return {
            "n": n,
            "oidx": oidx,
            "ts": ts,
            "day": day,
            "month": month,
            "cust": cust,
            "place": place,
            "n_items": n_items,
            "starts": starts,
            "item_order": item_order,
            "item_seq": item_pos + 1,
            "prod": prod,
            "seller": seller,
            "qty": qty,
            "price": price,
            "freight": freight,
            "dist": dist,
            "total": total,
            "ptype": ptype,
            "voucher_split": voucher_split,
            "approved": approved,
            "has_approved": has_approved,
            "delivered": delivered,
            "is_delivered": is_delivered,
            "estimated": estimated,
            "status": status,
        }

    # ------------------------------------------------------------------------------------ table producers
    def _n_blocks(self) -> int:
        return len(self._cal["blocks"])

    def _customer_blocks(self) -> Iterator[tuple[int, dict]]:
        for b, lo in enumerate(range(0, self.n_customers, self.DIMENSION_BLOCK)):
            idx = np.arange(lo, min(self.n_customers, lo + self.DIMENSION_BLOCK))
            yield b, self._customer_columns(idx)

    def _customer_columns(self, idx: np.ndarray) -> dict:
        if not len(idx):
            return {}
        g = self._geo
        v = _name_vocab()
        p = self._customer_place(idx)
        n = len(idx)
        english = self._u(idx, "cust.en") < g.profile.english_share

        def pick(n_br: int, n_en: int, stream: str) -> np.ndarray:
            u = self._u(idx, stream)
            return np.where(english, n_br + (u * n_en).astype(np.int64), (u * n_br).astype(np.int64))

        first = pick(len(txt.FIRST_NAMES_BR), len(txt.FIRST_NAMES_EN), "cust.first")
        last = pick(len(txt.LAST_NAMES_BR), len(txt.LAST_NAMES_EN), "cust.last")
        name = v["first"][first] + " " + v["last"][last]
        compound = np.flatnonzero(~english & (self._u(idx, "cust.compound") < 0.35))
        middle = (self._u(idx[compound], "cust.middle") * len(txt.LAST_NAMES_BR)).astype(np.int64)
        name[compound] = (
            v["first"][first[compound]] + " " + v["last"][middle] + " " + v["last"][last[compound]]
        )
        ffirst, flast = v["first_ascii"][first], v["last_ascii"][last]
        style = (self._u(idx, "cust.mailstyle") * 5).astype(np.int64)
        digits = _fmt_int((self._u(idx, "cust.maildigits") * 999).astype(np.int64) + 1)
        local = np.empty(n, dtype=object)
        for k, fn in enumerate(
            (
                lambda m: ffirst[m] + "." + flast[m],
                lambda m: ffirst[m] + flast[m] + digits[m],
                lambda m: ffirst[m] + "_" + flast[m],
                lambda m: ffirst[m] + "." + flast[m] + digits[m],
                lambda m: v["first_initial"][first[m]] + flast[m] + digits[m],
            )
        ):
            m = style == k
            local[m] = fn(m)
        dom_cdf = np.cumsum(txt.EMAIL_DOMAIN_WEIGHTS) / sum(txt.EMAIL_DOMAIN_WEIGHTS)
        dom = v["domains"][
            np.minimum(np.searchsorted(dom_cdf, self._u(idx, "cust.domain"), side="right"), len(dom_cdf) - 1)
        ]
        ddd = g.city_ddd[p["city"]]
        num = (self._u(idx, "cust.phone") * 1e8).astype(np.int64)
        phone = _S.add(
            _S.add(
                _S.add(_S.add(g.profile.phone_prefix + " ", ddd.astype(str)), " 9"),
                _S.add(_pad(num // 10000, 4), "-"),
            ),
            _pad(num % 10000, 4),
        )
        phone = phone.astype(object)
        phone[self._u(idx, "cust.nophone") < 0.05] = None
        return {
            "customer_id": self._ids(idx, "customer"),
            "zip_prefix": _pad(p["zip5"], 5).astype(object),
            "city": g.city_name[p["city"]],
            "state": g.state_code[g.city_state[p["city"]]],
            "country": np.full(len(idx), self.country, dtype=object),  # the profile's country (ISO code)
            "lat": _fmt_fixed(p["lat"], 6),
            "lng": _fmt_fixed(p["lng"], 6),
            "name": name,
            "email": local + "@" + dom,
            "phone": phone,
        }

    def _seller_blocks(self) -> Iterator[tuple[int, dict]]:
        g = self._geo
        p = self._sellers
        idx = np.arange(self.n_sellers)
        yield (
            0,
            {
                "seller_id": self._ids(idx, "seller"),
                "zip_prefix": _pad(p["zip5"], 5).astype(object),
                "city": g.city_name[p["city"]],
                "state": g.state_code[g.city_state[p["city"]]],
                "lat": _fmt_fixed(p["lat"], 6),
                "lng": _fmt_fixed(p["lng"], 6),
            },
        )

    def _product_blocks(self) -> Iterator[tuple[int, dict]]:
        c = self._catalog
        cats = txt.CATEGORIES
        for b, lo in enumerate(range(0, self.n_products, self.DIMENSION_BLOCK)):
            idx = np.arange(lo, min(self.n_products, lo + self.DIMENSION_BLOCK))
            spec_u = self._u(idx, "prod.spec")
            mat_u = self._u(idx, "prod.material")
            use_u = self._u(idx, "prod.use")
            extra_u = self._u(idx, "prod.extra")
            titles, descs, attrs, uris = [], [], [], []
            for k, i in enumerate(idx):
                cat = cats[c["cat"][i]]
                t = txt.PRODUCT_TYPES[cat[0]][c["ptype"][i]]
                spec = t[3][int(spec_u[k] * len(t[3]))]
                color_pt, color_en, _ = txt.COLORS[c["color"][i]]
                material = cat[7][int(mat_u[k] * len(cat[7]))]
                use = cat[8][int(use_u[k] * len(cat[8]))]
                length, h, w = (int(v) for v in c["dims"][i])
                wg = int(c["weight_g"][i])
                title = f"{t[0]} {spec} - {color_pt}"
                extra = txt.DESCRIPTION_EXTRAS[int(extra_u[k] * len(txt.DESCRIPTION_EXTRAS))]
                titles.append(title)
                descs.append(
                    f"{title}. Feito em {material}, ideal para {use}. "
                    f"Dimensões aproximadas: {length} x {h} x {w} cm; peso {wg / 1000:.2f} kg. {extra}"
                )
                attrs.append(
                    json.dumps(
                        {
                            "weight_g": wg,
                            "length_cm": length,
                            "height_cm": h,
                            "width_cm": w,
                            "color": color_en,
                            "material": material,
                        },
                        ensure_ascii=False,
                    )
                )
            ids = c["ids"][idx]
            if self.image_dir is not None:
                uris = np.array([str(self.image_dir / f"{pid}.png") for pid in ids], dtype=object)
            else:
                uris = np.full(len(idx), None, dtype=object)
            yield (
                b,
                {
                    "product_id": ids,
                    "category": np.array([cats[k][0] for k in c["cat"][idx]], dtype=object),
                    "title": np.array(titles, dtype=object),
                    "description": np.array(descs, dtype=object),
                    "price": _fmt_scaled(c["cents"][idx], 2),
                    "image_uri": uris,
                    "attributes": np.array(attrs, dtype=object),
                },
            )

    def _order_blocks(self) -> Iterator[tuple[int, dict]]:
        for b in range(self._n_blocks()):
            k = self._core(b)
            if not k["n"]:
                continue
            yield (
                b,
                {
                    "order_id": self._ids(k["oidx"], "order"),
                    "customer_id": self._ids(k["cust"], "customer"),
                    "status": k["status"],
                    "purchased_at": _fmt_ts(k["ts"]),
                    "approved_at": _fmt_ts(k["approved"], k["has_approved"]),
                    "delivered_at": _fmt_ts(k["delivered"], k["is_delivered"]),
                    "estimated_delivery_at": _fmt_ts(k["estimated"]),
                    # every synthetic order ships to its customer's address: no separate ship-to location
                    **{c: np.full(k["n"], None, dtype=object) for c in SHIP_TO_COLUMNS},
                },
            )

    def _item_blocks(self) -> Iterator[tuple[int, dict]]:
        c = self._catalog
        for b in range(self._n_blocks()):
            k = self._core(b)
            if not k["n"]:
                continue
            yield (
                b,
                {
                    "order_id": self._ids(k["oidx"][k["item_order"]], "order"),
                    "item_seq": _fmt_int(k["item_seq"]),
                    "product_id": c["ids"][k["prod"]],
                    "seller_id": self._ids(k["seller"], "seller"),
                    "price": _fmt_scaled(k["price"], 2),
                    "freight": _fmt_scaled(k["freight"], 2),
                    "quantity": _fmt_int(k["qty"]),
                },
            )

    _PAYMENT_TYPES = np.array(["credit_card", "boleto", "voucher", "debit_card"], dtype=object)

    def _payment_blocks(self) -> Iterator[tuple[int, dict]]:
        for b in range(self._n_blocks()):
            k = self._core(b)
            n = k["n"]
            if not n:
                continue
            rng = self._rng("payments", b)
            total = k["total"]
            split = k["voucher_split"]
            voucher_value = np.where(split, np.rint(total * rng.uniform(0.1, 0.6, n)).astype(np.int64), 0)
            main_value = total - voucher_value
            max_inst = np.clip(total // 3000, 1, 10)  # instalments of at least ~R$ 30
            inst = np.where(rng.random(n) < 0.35, 1, 1 + (rng.random(n) * max_inst).astype(np.int64))
            inst = np.minimum(inst, max_inst)
            inst = np.where(k["ptype"] == 0, inst, 1)
            n_rows = 1 + split.astype(np.int64)
            row_order, row_pos = _segment_positions(n_rows)
            is_voucher_row = split[row_order] & (row_pos == 0)
            ptype = np.where(is_voucher_row, 2, k["ptype"][row_order])
            value = np.where(is_voucher_row, voucher_value[row_order], main_value[row_order])
            yield (
                b,
                {
                    "order_id": self._ids(k["oidx"][row_order], "order"),
                    "seq": _fmt_int(row_pos + 1),
                    "payment_type": self._PAYMENT_TYPES[ptype],
                    "installments": _fmt_int(np.where(is_voucher_row, 1, inst[row_order])),
                    "value": _fmt_scaled(value, 2),
                },
            )

    # Score distributions (scores 1..5) by delivery outcome.
    _SCORE_P: ClassVar[dict[str, list[float]]] = {
        "ontime": [0.07, 0.03, 0.08, 0.20, 0.62],
        "late_small": [0.22, 0.10, 0.18, 0.20, 0.30],
        "late_big": [0.45, 0.13, 0.14, 0.12, 0.16],
        "undelivered": [0.75, 0.10, 0.08, 0.04, 0.03],
    }

    def _review_blocks(self) -> Iterator[tuple[int, dict]]:
        c = self._catalog
        for b in range(self._n_blocks()):
            k = self._core(b)
            n = k["n"]
            if not n:
                continue
            rng = self._rng("reviews", b)
            end = self._end_ts
            delivered, estimated, status = k["is_delivered"], k["estimated"], k["status"]
            late_days = (k["delivered"] - estimated) / _DAY
            # Who reviews, and when.
            u = rng.random(n)
            overdue = (status == "shipped") & (estimated + _DAY <= end)
            failed = (status == "canceled") | (status == "unavailable")
            created = np.where(
                delivered,
                k["delivered"] + (rng.lognormal(np.log(1.2 * _DAY), 0.7, n)).astype(np.int64),
                np.where(
                    overdue,
                    estimated + (rng.uniform(1, 10, n) * _DAY).astype(np.int64),
                    k["ts"] + (rng.uniform(1, 7, n) * _DAY).astype(np.int64),
                ),
            )
            reviewed = ((delivered & (u < 0.92)) | (overdue & (u < 0.6)) | (failed & (u < 0.4))) & (
                created <= end
            )
            sel = np.flatnonzero(reviewed)
            if not len(sel):
                continue
            m = len(sel)
            outcome = np.where(
                ~delivered[sel], 3, np.where(late_days[sel] <= 0, 0, np.where(late_days[sel] <= 3, 1, 2))
            )
            probs = np.array([self._SCORE_P[x] for x in ("ontime", "late_small", "late_big", "undelivered")])
            score = 1 + (rng.random(m)[:, None] >= np.cumsum(probs, axis=1)[outcome]).sum(axis=1)
            score = np.minimum(score, 5)
            first_prod = k["prod"][k["starts"][sel]]
            q = c["quality"][first_prod]
            adj = rng.random(m)
            score = np.where((q < -0.8) & (adj < 0.35), np.maximum(1, score - 2), score)
            score = np.where((q > 0.8) & (adj < 0.25), np.minimum(5, score + 1), score)
            title, text = self._review_texts(rng, score, outcome, late_days[sel], first_prod)
            yield (
                b,
                {
                    "review_id": self._ids(k["oidx"][sel], "review"),
                    "order_id": self._ids(k["oidx"][sel], "order"),
                    "customer_id": self._ids(k["cust"][sel], "customer"),
                    "product_id": c["ids"][first_prod],
                    "score": _fmt_int(score),
                    "title": title,
                    "text": text,
                    "created_at": _fmt_ts(created[sel]),
                },
            )

    def _review_texts(self, rng, score, outcome, late_days, prod) -> tuple[np.ndarray, np.ndarray]:
        """Compose titles and texts from the phrase banks (sentiment follows the score)."""
        banks = _banks()
        c = self._catalog
        m = len(score)
        lang = (rng.random(m) < 0.30).astype(np.int64)  # 0 = pt, 1 = en
        has_text = rng.random(m) < np.array([0.85, 0.75, 0.60, 0.42, 0.38])[score - 1]
        has_title = rng.random(m) < np.where(has_text, 0.35, 0.10)
        bucket = np.array([0, 0, 1, 2, 2])[score - 1]
        undelivered = outcome == 3
        late = (outcome == 1) | (outcome == 2)
        dkind = np.where(
            undelivered, 4, np.where(late, np.where(score >= 4, 3, 2), np.where(score <= 2, 1, 0))
        )
        days = np.where(late, np.ceil(late_days), np.maximum(2, np.floor(-np.nan_to_num(late_days))))
        days_s = _fmt_int(np.nan_to_num(days, nan=2).astype(np.int64))
        noun = np.where(lang == 1, c["noun_en"][prod], c["noun_pt"][prod])
        noun_cap = np.array([s[:1].upper() + s[1:] for s in noun], dtype=object)
        n_s, n_d = len(txt.OPENINGS["pt"]), len(_DELIVERY_KINDS)

        def part(name, gid, p):
            rendered = banks[name].render(gid, rng.random(m), noun, noun_cap, days_s)
            return np.where(rng.random(m) < p, rendered + " ", "")

        opening = part("opening", lang * n_s + (score - 1), 0.75)
        product = part("product", lang * 3 + bucket, np.where(undelivered, 0.05, 0.65))
        delivery = part("delivery", lang * n_d + dkind, np.where(late | undelivered, 0.85, 0.35))
        closing = part("closing", lang * 3 + bucket, 0.45)
        swap = rng.random(m) < 0.25
        body = np.where(swap, opening + delivery + product, opening + product + delivery) + closing
        empty = body == ""
        if empty.any():
            body[empty] = (
                banks["opening"].render(
                    (lang * n_s + score - 1)[empty],
                    rng.random(int(empty.sum())),
                    noun[empty],
                    noun_cap[empty],
                    days_s[empty],
                )
                + " "
            )
        style = rng.random(m)
        pii_kind = np.where(rng.random(m) < 0.03, rng.integers(0, 4, m), -1)
        pii_u = rng.random((m, 3))
        texts = np.full(m, None, dtype=object)
        idx = np.flatnonzero(has_text)
        if len(idx):
            pii = np.full(len(idx), "", dtype=object)
            for j in np.flatnonzero(pii_kind[idx] >= 0):  # ~3 % of texts
                i = idx[j]
                pii[j] = self._pii_sentence(_LANGS[lang[i]], int(pii_kind[i]), pii_u[i])
            t = _S.rstrip((body[idx] + pii).astype(str))
            st, sc = style[idx], score[idx]
            low = st < 0.12  # typed in lower case
            shout = ~low & (st < 0.17) & (sc == 1)
            bare = st > 0.92  # no final punctuation
            t[low] = _S.lower(t[low])
            t[shout] = _S.upper(t[shout])
            t[bare] = _S.rstrip(t[bare], ".!")
            texts[idx] = t.astype(object)
        title_gid = lang * 6 + np.where(undelivered, 5, score - 1)
        titles = banks["title"].render(title_gid, rng.random(m), noun, noun_cap, days_s)
        titles = np.where(has_title, titles, None)
        return titles, texts

    @staticmethod
    def _pii_sentence(lang: str, kind: int, u: np.ndarray) -> str:
        name = ("kind", "email", "phone", "cpf", "url")[kind + 1]
        templates = txt.PII_SENTENCES[lang][name]
        template = templates[int(u[0] * len(templates))]
        n = int(u[1] * 1e9)
        first = _ascii_fold(txt.FIRST_NAMES_BR[n % len(txt.FIRST_NAMES_BR)])
        last = _ascii_fold(txt.LAST_NAMES_BR[(n // 97) % len(txt.LAST_NAMES_BR)])
        value = {
            "email": f"{first}.{last}{n % 100}@{txt.EMAIL_DOMAINS[n % 4]}",
            "phone": (
                f"({11 + n % 80}) 9{n % 10000:04d}-{(n // 10000) % 10000:04d}"
                if u[2] < 0.5
                else f"+55 {11 + n % 80} 9{n % 10000:04d}-{(n // 10000) % 10000:04d}"
            ),
            "cpf": _cpf(n % 1_000_000_000),
            "url": (
                f"https://www.reclameaqui.com.br/reclamacao-{n % 100000}"
                if u[2] < 0.5
                else f"http://bit.ly/{format(n, 'x')[:7]}"
            ),
        }[name]
        return template.replace("{" + name + "}", value)

    def _event_blocks(self) -> Iterator[tuple[int, dict]]:
        """Clickstream: one converting session per order plus browsing sessions that do not convert."""
        cal = self._cal
        c = self._catalog
        types = np.array(["view", "cart", "purchase"], dtype=object)
        for b in range(self._n_blocks()):
            k = self._core(b)
            n = k["n"]
            if not n:
                continue
            rng = self._rng("events", b)
            # --- converting sessions (session s = order s of the block)
            item_order, item_prod = k["item_order"], k["prod"]
            m = len(item_order)
            first_prod = item_prod[k["starts"]]
            first_cat = c["cat"][first_prod]
            rep = 1 + (rng.random(m) < 0.35)
            v1_sess = np.repeat(item_order, rep)
            v1_prod = np.repeat(item_prod, rep)
            nx = rng.poisson(1.6, n)
            x_sess = np.repeat(np.arange(n), nx)
            x_prod = self._pick_product(first_cat[x_sess], rng.random(len(x_sess)))
            x_first = np.cumsum(nx) - nx
            extra_cart = (nx > 0) & (rng.random(n) < 0.25)
            xc_sess = np.flatnonzero(extra_cart)
            xc_prod = x_prod[x_first[xc_sess]]
            sess = np.concatenate([v1_sess, x_sess, item_order, xc_sess, item_order])
            prod = np.concatenate([v1_prod, x_prod, item_prod, xc_prod, item_prod])
            etype = np.concatenate(
                [
                    np.zeros(len(v1_sess) + len(x_sess), np.int64),
                    np.ones(m + len(xc_sess), np.int64),
                    np.full(m, 2, np.int64),
                ]
            )
            order = np.lexsort((rng.random(len(sess)), etype, sess))
            sess, prod, etype = sess[order], prod[order], etype[order]
            gap = np.where(etype == 2, 0, 5 + rng.exponential(55.0, len(sess)).astype(np.int64))
            csum = np.cumsum(gap)
            last = np.cumsum(np.bincount(sess, minlength=n)) - 1
            ts_conv = k["ts"][sess] - (csum[last[sess]] - csum + gap)
            # --- browsing sessions
            nb = int(rng.poisson(2.4 * n))
            b_day = k["day"][rng.integers(0, n, nb)]
            b_start = cal["epoch_day"][b_day] * _DAY + self._sod(rng, nb)
            b_cust = self._sample_browsers(rng, nb)
            b_cat = self._pick_category(cal["month"][b_day], rng.random(nb))
            nv = rng.geometric(0.45, nb)
            bv_sess, bv_pos = _segment_positions(nv)
            bv_prod = self._pick_product(b_cat[bv_sess], rng.random(len(bv_sess)))
            n_cart = np.where(rng.random(nb) < 0.30, 1 + (rng.random(nb) < 0.25), 0)
            n_cart = np.minimum(n_cart, nv)
            bc_sess = np.repeat(np.arange(nb), n_cart)
            bc_of = (rng.random(len(bc_sess)) * nv[bc_sess]).astype(np.int64)
            bv_first = np.cumsum(nv) - nv
            bc_prod = bv_prod[bv_first[bc_sess] + bc_of]
            bsess = np.concatenate([bv_sess, bc_sess])
            bkey = np.concatenate([2 * bv_pos, 2 * bc_of + 1])
            bprod = np.concatenate([bv_prod, bc_prod])
            btype = np.concatenate([np.zeros(len(bv_sess), np.int64), np.ones(len(bc_sess), np.int64)])
            order = np.lexsort((bkey, bsess))
            bsess, bprod, btype = bsess[order], bprod[order], btype[order]
            bgap = 5 + rng.exponential(50.0, len(bsess)).astype(np.int64)
            bcs = np.cumsum(bgap)
            bfirst = np.cumsum(np.bincount(bsess, minlength=nb)) - np.bincount(bsess, minlength=nb)
            ts_browse = b_start[bsess] + (bcs - bcs[bfirst[bsess]])
            # --- together, in time order
            ts = np.clip(np.concatenate([ts_conv, ts_browse]), self._start_ts, self._end_ts)
            sid = np.concatenate([sess, n + bsess]).astype(np.int64)
            prod = np.concatenate([prod, bprod])
            etype = np.concatenate([etype, btype])
            order = np.argsort(ts, kind="stable")
            seq = np.arange(len(order), dtype=np.int64)
            # Ids are formatted once per session and looked up per event.
            session_ids = self._ids((np.int64(b) << 32) + np.arange(n + nb, dtype=np.int64), "session")
            session_customers = self._ids(np.concatenate([k["cust"], b_cust]), "customer")
            sid = sid[order]
            yield (
                b,
                {
                    "event_id": self._ids((np.int64(b) << 32) + seq, "event"),
                    "ts": _fmt_ts(ts[order]),
                    "customer_id": session_customers[sid],
                    "session_id": session_ids[sid],
                    "event_type": types[etype[order]],
                    "product_id": c["ids"][prod[order]],
                },
            )

    def _region_blocks(self) -> Iterator[tuple[int, dict]]:
        g = self._geo
        used: set[int] = {int(z) for z in self._sellers["zip3"]}
        for lo in range(0, self.n_customers, 200_000):
            idx = np.arange(lo, min(self.n_customers, lo + 200_000))
            used.update(np.unique(self._customer_place(idx)["zip3"]).tolist())
        zip3 = np.array(sorted(used), dtype=np.int64)
        city = np.array([g.zip3_city[int(z)] for z in zip3], dtype=np.int64)
        zlat, zlng = g.zip3_centre(city, zip3)
        zip3_s = _pad(zip3, 3).astype(object)
        ns = len(g.state_code)
        yield (
            0,
            {
                "region_id": np.concatenate(["state:" + g.state_code, "zip3:" + zip3_s]),
                "level": np.array(["state"] * ns + ["zip3"] * len(zip3), dtype=object),
                "name": np.concatenate([g.state_name, g.city_name[city]]),
                "state": np.concatenate([g.state_code, g.state_code[g.city_state[city]]]),
                "lat": _fmt_fixed(np.concatenate([g.state_lat, zlat]), 6),
                "lng": _fmt_fixed(np.concatenate([g.state_lng, zlng]), 6),
            },
        )

    # ------------------------------------------------------------------------------------ dirty rows
    def _apply_dirty(self, table: str, cols: dict, b: int) -> dict:
        kinds = self.DIRTY_KINDS[table]
        if not cols or not kinds or self.dirty_rate <= 0:
            return cols
        n = len(next(iter(cols.values())))
        rng = self._rng("dirty." + table, b)
        rows = np.flatnonzero(rng.random(n) < self.dirty_rate)
        if not len(rows):
            return cols
        kind = rng.integers(0, len(kinds), len(rows))
        alt = rng.random(len(rows))
        dup: list[int] = []
        for r, kd, a in zip(rows, kind, alt):
            name = kinds[kd]
            if name == "duplicate_row":
                dup.append(int(r))
            elif name == "coords_out_of_bounds":
                cols["lat"][r] = cols["lng"][r] = "0.000000"
            elif name == "negative_price":
                cols["price"][r] = "-" + cols["price"][r]
            elif name == "negative_value":
                cols["value"][r] = "-" + cols["value"][r]
            elif name == "missing_customer_id":
                cols["customer_id"][r] = None
            elif name == "unparseable_timestamp":
                s = cols["purchased_at"][r]
                cols["purchased_at"][r] = s[:8] + "32" + s[10:]
            elif name == "approved_before_purchase":
                t = np.datetime64(cols["purchased_at"][r].replace(" ", "T"), "s") - np.timedelta64(2, "h")
                cols["approved_at"][r] = str(t).replace("T", " ")
            elif name == "score_out_of_range":
                cols["score"][r] = "0" if a < 0.5 else "6"
            elif name == "unknown_event_type":
                cols["event_type"][r] = "click"
        if dup:
            take = np.sort(np.concatenate([np.arange(n), np.array(dup, dtype=np.int64)]), kind="stable")
            cols = {k: v[take] for k, v in cols.items()}
        return cols

    # ------------------------------------------------------------------------------------ frames, images
    def _frame(self, table: str, cols: dict) -> pd.DataFrame:
        first_row = cols.pop("_first_row")
        n = len(next(iter(cols.values())))
        data = {name: cols[name] for name in TABLES[table].column_names if name in cols}
        data["_source_file"] = np.full(n, self.source_file(table), dtype=object)
        data["_source_row"] = np.arange(first_row, first_row + n, dtype=np.int64)
        return pd.DataFrame(data)

    @cached_property
    def _product_index(self) -> dict[str, int]:
        return {pid: i for i, pid in enumerate(self._catalog["ids"])}

    def _ensure_images(self, frame: pd.DataFrame) -> None:
        if self.image_dir is None or not self.write_images:
            return
        self.image_dir.mkdir(parents=True, exist_ok=True)
        index = self._product_index
        for pid, uri in zip(frame["product_id"], frame["image_uri"]):
            if uri is None or pid not in index or os.path.exists(uri):
                continue
            _draw_product_image(Path(uri), self, index[pid])


def _rechunk(blocks: Iterator[dict], chunk_rows: int) -> Iterator[dict]:
    """Re-cut a stream of column dicts into dicts of exactly ``chunk_rows`` rows (the last may be shorter);
    adds ``_first_row`` (1-based row number of the chunk's first row over the whole stream)."""
    pending: list[dict] = []
    n_pending = 0
    row = 1

    def take(k: int) -> dict:
        nonlocal pending, n_pending
        parts, got = [], 0
        while got < k:
            piece = pending[0]
            size = len(next(iter(piece.values())))
            need = k - got
            if size <= need:
                parts.append(piece)
                pending.pop(0)
                got += size
            else:
                parts.append({c: v[:need] for c, v in piece.items()})
                pending[0] = {c: v[need:] for c, v in piece.items()}
                got += need
        n_pending -= k
        if len(parts) == 1:
            return dict(parts[0])
        return {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}

    for cols in blocks:
        if not cols:
            continue
        size = len(next(iter(cols.values())))
        if not size:
            continue
        pending.append(cols)
        n_pending += size
        while n_pending >= chunk_rows:
            out = take(chunk_rows)
            out["_first_row"] = row
            row += chunk_rows
            yield out
    if n_pending:
        k = n_pending
        out = take(k)
        out["_first_row"] = row
        yield out


# ---------------------------------------------------------------------------------------------- images
def _draw_product_image(path: Path, src: SyntheticSource, i: int) -> None:
    """A 96x96 PNG: category background tint and shape, product colour, product-specific jitter."""
    from PIL import Image, ImageDraw

    c = src._catalog
    cat = txt.CATEGORIES[int(c["cat"][i])]
    shape, base = cat[5], np.array(cat[6], dtype=float)
    fill = tuple(int(v) for v in txt.COLORS[int(c["color"][i])][2])
    h = int(_mix64(np.array([i], dtype=np.uint64) + src._key("image"))[0])
    r = [((h >> (6 * k)) & 63) / 63.0 for k in range(10)]
    bg = tuple(int(v) for v in np.clip(base * 0.35 + 255 * 0.65 + (r[0] - 0.5) * 30, 0, 255))
    edge = tuple(int(v) for v in base * 0.6)
    img = Image.new("RGB", (96, 96), bg)
    d = ImageDraw.Draw(img)
    for k in range(int(r[1] * 4)):  # background stripes
        y = int(8 + r[2 + k] * 80)
        d.line([(0, y), (95, y)], fill=tuple(int(v) for v in base * 0.8 + 40), width=1 + k % 2)
    s = 26 + r[6] * 10  # half size
    cx, cy = 48 + (r[7] - 0.5) * 12, 48 + (r[8] - 0.5) * 12
    box = [cx - s, cy - s, cx + s, cy + s]
    if shape in ("rect", "lines"):
        d.rectangle([cx - s, cy - s * 0.7, cx + s, cy + s * 0.7], fill=fill, outline=edge, width=3)
        if shape == "lines":
            for k in range(4):
                y = cy - s * 0.5 + k * s * 0.33
                d.line([(cx - s * 0.8, y), (cx + s * 0.8, y)], fill=edge, width=2)
    elif shape in ("ellipse", "bottle"):
        d.ellipse([cx - s * 0.6, cy - s, cx + s * 0.6, cy + s], fill=fill, outline=edge, width=3)
        if shape == "bottle":
            d.rectangle([cx - s * 0.2, cy - s - 8, cx + s * 0.2, cy - s + 4], fill=edge)
    elif shape in ("circle", "wheel", "ring"):
        d.ellipse(
            box,
            fill=fill if shape != "ring" else None,
            outline=edge if shape != "ring" else fill,
            width=3 if shape != "ring" else 9,
        )
        if shape == "wheel":
            d.ellipse([cx - s * 0.35, cy - s * 0.35, cx + s * 0.35, cy + s * 0.35], fill=edge)
    elif shape in ("diamond", "hexagon", "star", "triangle", "bolt"):
        n = {"diamond": 4, "hexagon": 6, "star": 10, "triangle": 3, "bolt": 5}[shape]
        pts = []
        for k in range(n):
            ang = 2 * math.pi * k / n - math.pi / 2 + (r[9] - 0.5) * 0.3
            rad = s * (0.45 if shape == "star" and k % 2 else 1.0)
            if shape == "bolt":
                rad = s * (0.3 if k % 2 else 1.0)
            pts.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang)))
        d.polygon(pts, fill=fill, outline=edge)
    elif shape in ("roundrect", "phone", "pad"):
        w, hh = (s * 0.55, s) if shape == "phone" else (s, s * 0.6)
        d.rounded_rectangle([cx - w, cy - hh, cx + w, cy + hh], radius=10, fill=fill, outline=edge, width=3)
        if shape == "pad":
            d.ellipse([cx - w * 0.7, cy - 6, cx - w * 0.7 + 12, cy + 6], fill=edge)
            d.ellipse([cx + w * 0.7 - 12, cy - 6, cx + w * 0.7, cy + 6], fill=edge)
    elif shape in ("bars", "chair"):
        for k in range(3):
            x0 = cx - s + k * s * 0.7
            d.rectangle(
                [x0, cy - s * (0.4 + 0.3 * k), x0 + s * 0.5, cy + s], fill=fill, outline=edge, width=2
            )
    else:  # cloud, bag, paw
        for dx, dy, rr in ((-0.45, 0.1, 0.5), (0.0, -0.2, 0.6), (0.45, 0.1, 0.5), (0.0, 0.35, 0.5)):
            x, y, rad = cx + dx * s, cy + dy * s, rr * s
            d.ellipse([x - rad, y - rad, x + rad, y + rad], fill=fill, outline=edge, width=2)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    img.save(tmp, format="PNG", compress_level=3)
    os.replace(tmp, path)
