"""The Kaggle *Brazilian E-Commerce Public Dataset by Olist* as canonical raw tables.

Files are looked up in ``data_dir`` as ``<name>.csv`` or ``<name>.csv.gz``.  Each canonical table
streams its main file in chunks through :mod:`ecom_pipeline.sources.files` (so bad lines, bad bytes and
truncated archives are handled the same way as for any other file source); the lookups that fill
canonical columns (category translation, zip centroids, the person behind an order, ...) are built once
per source object and kept in memory (dictionaries keyed by id: a few tens of MB for the full dataset).

Mapping (Olist column -> canonical column); Olist columns not named here go nowhere:

* customers: ``customer_unique_id`` -> customer_id (the *person*; Olist's ``customer_id`` is one per
  order and is resolved to the person wherever it is referenced), ``customer_zip_code_prefix`` ->
  zip_prefix, ``customer_city`` -> city, ``customer_state`` -> state, lat/lng = centroid of the
  geolocation rows of that zip prefix.  The customers file has one row per *order*, so a person who
  ordered twice appears twice: the first row of each person is kept (repeat rows are counted in
  ``describe()["customers_repeat_rows"]``), the only place this adapter collapses rows.
* sellers: ``seller_id``, ``seller_zip_code_prefix``, ``seller_city``, ``seller_state``; lat/lng as above.
* products: ``product_id``; category = English name from ``product_category_name_translation``
  (fallback: the Portuguese name; None when the product has no category); title, description and
  image_uri None (Olist has none); price = median item price of the product in the items file (None when
  it was never sold); attributes = JSON object of the numeric columns ``product_name_lenght``,
  ``product_description_lenght`` (misspelt as in the source), ``product_photos_qty``,
  ``product_weight_g``, ``product_length_cm``, ``product_height_cm``, ``product_width_cm``.
* orders: ``order_id``, customer_id (via the customers file), ``order_status`` -> status,
  ``order_purchase_timestamp`` -> purchased_at, ``order_approved_at`` -> approved_at,
  ``order_delivered_customer_date`` -> delivered_at, ``order_estimated_delivery_date`` ->
  estimated_delivery_at.  ``order_delivered_carrier_date`` goes nowhere.
* order_items: ``order_id``, ``order_item_id`` -> item_seq, ``product_id``, ``seller_id``, ``price``,
  ``freight_value`` -> freight; quantity None (each Olist item row is one unit).
  ``shipping_limit_date`` goes nowhere.
* payments: ``order_id``, ``payment_sequential`` -> seq, ``payment_type``, ``payment_installments`` ->
  installments, ``payment_value`` -> value.
* reviews: ``review_id``, ``order_id``, customer_id (order -> Olist customer -> person), product_id (the
  product of the order's first item, i.e. lowest ``order_item_id``), ``review_score`` -> score,
  ``review_comment_title`` -> title, ``review_comment_message`` -> text, ``review_creation_date`` ->
  created_at.  ``review_answer_timestamp`` goes nowhere.
* regions (derived from the geolocation file): one row per state (``state:SP``, level ``state``, name =
  the state's name, centroid of all its geolocation points) and one per 5-digit zip prefix
  (``zip5:01012``, level ``zip5``, name = the most frequent city spelling, the most frequent state).
  Derived rows carry the geolocation file as ``_source_file`` and their 1-based rank (states sorted by
  code, then zip prefixes sorted) as ``_source_row``.
* events: Olist has none.

Geolocation points outside Brazil's bounding box (the full dataset has a few hundred, e.g. in Europe)
are left out of every centroid and counted in ``describe()``.  Zip prefixes are zero-padded to five
digits where a file lost the leading zero.

Times in Olist are local Brazilian time (the shop is in São Paulo): ``parse_hints`` says
``America/Sao_Paulo`` so staging converts them to UTC.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from ecom_pipeline.canonical import BRAZIL_BOUNDS, TABLES, ParseHints
from ecom_pipeline.sources.base import DEFAULT_CHUNK_ROWS, Source, SourceError
from ecom_pipeline.sources.files import CsvOptions, ReadReport, finish_chunk, iter_file_chunks

FILES = {
    "orders": "olist_orders_dataset",
    "customers": "olist_customers_dataset",
    "order_items": "olist_order_items_dataset",
    "payments": "olist_order_payments_dataset",
    "reviews": "olist_order_reviews_dataset",
    "geolocation": "olist_geolocation_dataset",
    "products": "olist_products_dataset",
    "sellers": "olist_sellers_dataset",
    "translation": "product_category_name_translation",
}

# canonical table -> (main file, other files it cannot do without)
TABLE_FILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "customers": ("customers", ()),
    "sellers": ("sellers", ()),
    "products": ("products", ()),
    "orders": ("orders", ("customers",)),
    "order_items": ("order_items", ()),
    "payments": ("payments", ()),
    "reviews": ("reviews", ("orders", "customers")),
    "regions": ("geolocation", ()),
}

PRODUCT_ATTRIBUTES = (
    "product_name_lenght",
    "product_description_lenght",
    "product_photos_qty",
    "product_weight_g",
    "product_length_cm",
    "product_height_cm",
    "product_width_cm",
)

BRAZIL_STATES = {
    "AC": "Acre",
    "AL": "Alagoas",
    "AP": "Amapá",
    "AM": "Amazonas",
    "BA": "Bahia",
    "CE": "Ceará",
    "DF": "Distrito Federal",
    "ES": "Espírito Santo",
    "GO": "Goiás",
    "MA": "Maranhão",
    "MT": "Mato Grosso",
    "MS": "Mato Grosso do Sul",
    "MG": "Minas Gerais",
    "PA": "Pará",
    "PB": "Paraíba",
    "PR": "Paraná",
    "PE": "Pernambuco",
    "PI": "Piauí",
    "RJ": "Rio de Janeiro",
    "RN": "Rio Grande do Norte",
    "RS": "Rio Grande do Sul",
    "RO": "Rondônia",
    "RR": "Roraima",
    "SC": "Santa Catarina",
    "SP": "São Paulo",
    "SE": "Sergipe",
    "TO": "Tocantins",
}

OLIST_HINTS = ParseHints(geo_bounds="brazil", timezone="America/Sao_Paulo")


def zip5(value: str | None) -> str | None:
    """Olist zip prefixes are 5 digits; put back leading zeros a spreadsheet may have dropped."""
    if value and value.isdigit() and len(value) < 5:
        return value.zfill(5)
    return value


def _num(value: str | None):
    """An attribute value as a JSON number where it is one, else the text (or null)."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        pass
    try:
        f = float(value)
    except ValueError:
        return value
    return int(f) if f.is_integer() else f


def _fmt(x: float | None) -> str | None:
    return None if x is None or math.isnan(x) else repr(float(x))


class OlistSource(Source):
    name = "olist"

    def __init__(self, data_dir: Path | str):
        self.data_dir = Path(data_dir)
        if not self.data_dir.is_dir():
            raise SourceError("Olist data folder not found", file=str(self.data_dir))
        self.paths: dict[str, Path] = {}
        for key, stem in FILES.items():
            for candidate in (f"{stem}.csv", f"{stem}.csv.gz"):
                p = self.data_dir / candidate
                if p.is_file():
                    self.paths[key] = p
                    break
        if not any(main in self.paths for main, _ in TABLE_FILES.values()):
            raise SourceError(
                "no Olist files found; expected e.g. olist_orders_dataset.csv[.gz]", file=str(self.data_dir)
            )
        self.reports: dict[str, ReadReport] = {}
        self.stats: Counter = Counter()
        self._cache: dict[str, object] = {}

    # ------------------------------------------------------------------ interface
    def tables(self) -> set[str]:
        return {
            t
            for t, (main, needs) in TABLE_FILES.items()
            if main in self.paths and all(n in self.paths for n in needs)
        }

    def parse_hints(self, table: str) -> ParseHints:
        return OLIST_HINTS

    def describe(self) -> dict:
        return {
            "source": self.name,
            "data_dir": str(self.data_dir),
            "files": {p.name: p.stat().st_size for p in self.paths.values()},
            "tables": sorted(self.tables()),
            "missing_files": sorted(f"{FILES[k]}.csv[.gz]" for k in FILES if k not in self.paths),
            "timezone": OLIST_HINTS.timezone,
            "read_reports": {k: r.as_dict() for k, r in self.reports.items()},
            **{k: int(v) for k, v in sorted(self.stats.items())},
        }

    def read(self, table: str, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[pd.DataFrame]:
        self.check_table(table)
        if table not in self.tables():
            main, needs = TABLE_FILES.get(table, (None, ()))
            if main is None:
                raise SourceError(f"Olist has no {table} table")
            missing = [f"{FILES[k]}.csv[.gz]" for k in (main, *needs) if k not in self.paths]
            raise SourceError(f"cannot build {table}: missing {', '.join(missing)}", file=str(self.data_dir))
        yield from getattr(self, f"_read_{table}")(chunk_rows)

    # ------------------------------------------------------------------ file access
    def _chunks(self, key: str, columns: list[str], chunk_rows: int, report_as: str | None = None):
        path = self.paths[key]
        report = ReadReport(path.name)
        self.reports[report_as or key] = report
        return iter_file_chunks(
            path, columns=columns, chunk_rows=chunk_rows, report=report, options=CsvOptions()
        )

    def _lookup_chunks(self, key: str, columns: list[str]):
        """Chunks of a file read for a lookup (not reported as a delivered table)."""
        return iter_file_chunks(self.paths[key], columns=columns, chunk_rows=200_000)

    def _cached(self, name: str, build):
        if name not in self._cache:
            self._cache[name] = build()
        return self._cache[name]

    # ------------------------------------------------------------------ lookups
    def _translation(self) -> dict[str, str]:
        def build():
            if "translation" not in self.paths:
                self.stats["translation_file_missing"] = 1
                return {}
            out = {}
            for c in self._lookup_chunks(
                "translation", ["product_category_name", "product_category_name_english"]
            ):
                ok = c["_parse_error"].isna()
                out.update(
                    zip(c.loc[ok, "product_category_name"], c.loc[ok, "product_category_name_english"])
                )
            return {k: v for k, v in out.items() if k and v}

        return self._cached("translation", build)

    def _geo(self) -> dict:
        """Zip and state centroids from the geolocation file (points outside Brazil left out)."""

        def build():
            zips: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
            states: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
            cities: dict[str, Counter] = defaultdict(Counter)
            zip_states: dict[str, Counter] = defaultdict(Counter)
            if "geolocation" not in self.paths:
                return {"zips": {}, "states": {}, "cities": {}, "zip_states": {}}
            (lat0, lat1), (lng0, lng1) = BRAZIL_BOUNDS["lat"], BRAZIL_BOUNDS["lng"]
            cols = [
                "geolocation_zip_code_prefix",
                "geolocation_lat",
                "geolocation_lng",
                "geolocation_city",
                "geolocation_state",
            ]
            for c in self._lookup_chunks("geolocation", cols):
                ok = c["_parse_error"].isna() & c["geolocation_zip_code_prefix"].notna()
                self.stats["geolocation_unreadable_rows"] += int((~ok).sum())
                c = c[ok]
                lat = pd.to_numeric(c["geolocation_lat"], errors="coerce")
                lng = pd.to_numeric(c["geolocation_lng"], errors="coerce")
                inside = lat.between(lat0, lat1) & lng.between(lng0, lng1)
                self.stats["geolocation_points_outside_brazil"] += int((~inside).sum())
                g = pd.DataFrame(
                    {
                        "zip": c["geolocation_zip_code_prefix"].map(zip5),
                        "state": c["geolocation_state"],
                        "city": c["geolocation_city"],
                        "lat": lat,
                        "lng": lng,
                    }
                )[inside]
                for key, acc_map in (("zip", zips), ("state", states)):
                    agg = (
                        g.dropna(subset=[key])
                        .groupby(key)
                        .agg(lat=("lat", "sum"), lng=("lng", "sum"), n=("lat", "count"))
                    )
                    for k, a, b, n in zip(agg.index, agg["lat"], agg["lng"], agg["n"]):
                        acc = acc_map[k]
                        acc[0] += float(a)
                        acc[1] += float(b)
                        acc[2] += int(n)
                for (z, city), n in g.dropna(subset=["city"]).groupby(["zip", "city"]).size().items():
                    cities[z][city] += int(n)
                for (z, st), n in g.dropna(subset=["state"]).groupby(["zip", "state"]).size().items():
                    zip_states[z][st] += int(n)
            return {
                "zips": {z: (a[0] / a[2], a[1] / a[2]) for z, a in zips.items() if a[2]},
                "states": {s: (a[0] / a[2], a[1] / a[2]) for s, a in states.items() if a[2]},
                "cities": {z: c.most_common(1)[0][0] for z, c in cities.items()},
                "zip_states": {z: c.most_common(1)[0][0] for z, c in zip_states.items()},
            }

        return self._cached("geo", build)

    def _person_of_customer(self) -> dict[str, str]:
        """Olist's per-order customer_id -> customer_unique_id (the person)."""

        def build():
            out: dict[str, str] = {}
            for c in self._lookup_chunks("customers", ["customer_id", "customer_unique_id"]):
                ok = c["_parse_error"].isna() & c["customer_id"].notna()
                out.update(zip(c.loc[ok, "customer_id"], c.loc[ok, "customer_unique_id"]))
            return out

        return self._cached("person", build)

    def _customer_of_order(self) -> dict[str, str]:
        def build():
            out: dict[str, str] = {}
            for c in self._lookup_chunks("orders", ["order_id", "customer_id"]):
                ok = c["_parse_error"].isna() & c["order_id"].notna()
                out.update(zip(c.loc[ok, "order_id"], c.loc[ok, "customer_id"]))
            return out

        return self._cached("order_customer", build)

    def _items_lookups(self) -> dict:
        """First item's product per order, median item price per product."""

        def build():
            first: dict[str, tuple[int, str]] = {}
            prices: dict[str, list[float]] = defaultdict(list)
            if "order_items" not in self.paths:
                return {"first_product": {}, "median_price": {}}
            for c in self._lookup_chunks("order_items", ["order_id", "order_item_id", "product_id", "price"]):
                c = c[c["_parse_error"].isna()]
                seq = pd.to_numeric(c["order_item_id"], errors="coerce")
                price = pd.to_numeric(c["price"], errors="coerce")
                for o, s, p in zip(c["order_id"], seq, c["product_id"]):
                    if o is None or p is None or math.isnan(s):
                        continue
                    if o not in first or s < first[o][0]:
                        first[o] = (s, p)
                for p, v in zip(c["product_id"], price):
                    if p is not None and not math.isnan(v):
                        prices[p].append(float(v))
            return {
                "first_product": {o: p for o, (_, p) in first.items()},
                "median_price": {p: statistics.median(v) for p, v in prices.items()},
            }

        return self._cached("items", build)

    # ------------------------------------------------------------------ helpers
    def _lat_lng(self, zips: pd.Series) -> tuple[list, list]:
        cent = self._geo()["zips"]
        lat, lng = [], []
        for z in zips:
            p = cent.get(z)
            lat.append(_fmt(p[0]) if p else None)
            lng.append(_fmt(p[1]) if p else None)
        return lat, lng

    # ------------------------------------------------------------------ tables
    def _read_customers(self, chunk_rows: int) -> Iterator[pd.DataFrame]:
        cols = ["customer_unique_id", "customer_zip_code_prefix", "customer_city", "customer_state"]
        seen: set[str] = set()
        for c in self._chunks("customers", cols, chunk_rows):
            ids = c["customer_unique_id"]
            keep = np.ones(len(c), dtype=bool)
            for i, (cid, err) in enumerate(zip(ids, c["_parse_error"])):
                if err is not None or cid is None:
                    continue
                if cid in seen:
                    keep[i] = False
                else:
                    seen.add(cid)
            self.stats["customers_repeat_rows"] += int((~keep).sum())
            c = c[keep]
            if c.empty:
                continue
            zips = c["customer_zip_code_prefix"].map(zip5)
            lat, lng = self._lat_lng(zips)
            yield finish_chunk(
                c,
                {
                    "customer_id": c["customer_unique_id"],
                    "zip_prefix": zips,
                    "city": c["customer_city"],
                    "state": c["customer_state"],
                    "lat": lat,
                    "lng": lng,
                },
                "customer_id",
            )

    def _read_sellers(self, chunk_rows: int) -> Iterator[pd.DataFrame]:
        cols = ["seller_id", "seller_zip_code_prefix", "seller_city", "seller_state"]
        for c in self._chunks("sellers", cols, chunk_rows):
            zips = c["seller_zip_code_prefix"].map(zip5)
            lat, lng = self._lat_lng(zips)
            yield finish_chunk(
                c,
                {
                    "seller_id": c["seller_id"],
                    "zip_prefix": zips,
                    "city": c["seller_city"],
                    "state": c["seller_state"],
                    "lat": lat,
                    "lng": lng,
                },
                "seller_id",
            )

    def _read_products(self, chunk_rows: int) -> Iterator[pd.DataFrame]:
        tr = self._translation()
        median = self._items_lookups()["median_price"]
        cols = ["product_id", "product_category_name", *PRODUCT_ATTRIBUTES]
        for c in self._chunks("products", cols, chunk_rows):
            pt = c["product_category_name"]
            untranslated = pt.notna() & ~pt.isin(list(tr))
            self.stats["products_category_untranslated"] += int(untranslated.sum())
            attrs = [
                json.dumps(dict(zip(PRODUCT_ATTRIBUTES, map(_num, vals))), ensure_ascii=False)
                for vals in zip(*(c[a] for a in PRODUCT_ATTRIBUTES))
            ]
            yield finish_chunk(
                c,
                {
                    "product_id": c["product_id"],
                    "category": pt.map(lambda v: None if v is None else tr.get(v, v)),
                    "title": None,
                    "description": None,
                    "price": c["product_id"].map(lambda p: _fmt(median.get(p))),
                    "image_uri": None,
                    "attributes": attrs,
                },
                "product_id",
            )

    def _read_orders(self, chunk_rows: int) -> Iterator[pd.DataFrame]:
        person = self._person_of_customer()
        cols = [
            "order_id",
            "customer_id",
            "order_status",
            "order_purchase_timestamp",
            "order_approved_at",
            "order_delivered_customer_date",
            "order_estimated_delivery_date",
        ]
        for c in self._chunks("orders", cols, chunk_rows):
            cust = c["customer_id"].map(person.get)
            self.stats["orders_customer_unresolved"] += int((cust.isna() & c["customer_id"].notna()).sum())
            yield finish_chunk(
                c,
                {
                    "order_id": c["order_id"],
                    "customer_id": cust,
                    "status": c["order_status"],
                    "purchased_at": c["order_purchase_timestamp"],
                    "approved_at": c["order_approved_at"],
                    "delivered_at": c["order_delivered_customer_date"],
                    "estimated_delivery_at": c["order_estimated_delivery_date"],
                },
                "order_id",
            )

    def _read_order_items(self, chunk_rows: int) -> Iterator[pd.DataFrame]:
        cols = ["order_id", "order_item_id", "product_id", "seller_id", "price", "freight_value"]
        for c in self._chunks("order_items", cols, chunk_rows):
            yield finish_chunk(
                c,
                {
                    "order_id": c["order_id"],
                    "item_seq": c["order_item_id"],
                    "product_id": c["product_id"],
                    "seller_id": c["seller_id"],
                    "price": c["price"],
                    "freight": c["freight_value"],
                    "quantity": None,
                },
                "order_id",
            )

    def _read_payments(self, chunk_rows: int) -> Iterator[pd.DataFrame]:
        cols = ["order_id", "payment_sequential", "payment_type", "payment_installments", "payment_value"]
        for c in self._chunks("payments", cols, chunk_rows):
            yield finish_chunk(
                c,
                {
                    "order_id": c["order_id"],
                    "seq": c["payment_sequential"],
                    "payment_type": c["payment_type"],
                    "installments": c["payment_installments"],
                    "value": c["payment_value"],
                },
                "order_id",
            )

    def _read_reviews(self, chunk_rows: int) -> Iterator[pd.DataFrame]:
        person = self._person_of_customer()
        order_customer = self._customer_of_order()
        first_product = self._items_lookups()["first_product"]
        cols = [
            "review_id",
            "order_id",
            "review_score",
            "review_comment_title",
            "review_comment_message",
            "review_creation_date",
        ]
        for c in self._chunks("reviews", cols, chunk_rows):
            cust = c["order_id"].map(lambda o: person.get(order_customer.get(o)) if o is not None else None)
            self.stats["reviews_customer_unresolved"] += int((cust.isna() & c["order_id"].notna()).sum())
            yield finish_chunk(
                c,
                {
                    "review_id": c["review_id"],
                    "order_id": c["order_id"],
                    "customer_id": cust,
                    "product_id": c["order_id"].map(first_product.get),
                    "score": c["review_score"],
                    "title": c["review_comment_title"],
                    "text": c["review_comment_message"],
                    "created_at": c["review_creation_date"],
                },
                "review_id",
            )

    def _read_regions(self, chunk_rows: int) -> Iterator[pd.DataFrame]:
        geo = self._geo()
        label = self.paths["geolocation"].name
        rows: list[tuple] = []
        for st in sorted(geo["states"]):
            lat, lng = geo["states"][st]
            rows.append((f"state:{st}", "state", BRAZIL_STATES.get(st, st), st, _fmt(lat), _fmt(lng)))
        for z in sorted(geo["zips"]):
            lat, lng = geo["zips"][z]
            rows.append(
                (f"zip5:{z}", "zip5", geo["cities"].get(z), geo["zip_states"].get(z), _fmt(lat), _fmt(lng))
            )
        self.stats["regions_state_rows"] = len(geo["states"])
        self.stats["regions_zip5_rows"] = len(geo["zips"])
        cols = TABLES["regions"].column_names
        for start in range(0, len(rows), chunk_rows):
            part = rows[start : start + chunk_rows]
            df = pd.DataFrame(part, columns=cols, dtype=object)
            df["_source_file"] = label
            df["_source_row"] = np.arange(start + 1, start + 1 + len(part), dtype="int64")
            df["_parse_error"] = None
            yield df
