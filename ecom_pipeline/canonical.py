"""The canonical tables every source produces (listed for users in docs/architecture.md, generated from here).

One declaration drives the raw layer (which columns exist, all as text), the staging layer (types, keys,
ranges, foreign keys, privacy treatment) and the UI (column schemas as asset metadata).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# How a column is protected on its way into staging.
#   "pseudonym": keyed HMAC pseudonym (ids, names, e-mails, phones): the raw value never leaves `raw`.
#   "mask":      free text with e-mails, phones, CPF/CNPJ and URLs replaced by placeholders.
Privacy = Literal["pseudonym", "mask"]


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # DuckDB type in staging: VARCHAR, DOUBLE, INTEGER, TIMESTAMP
    required: bool = False  # a null after typing sends the row to quarantine
    privacy: Privacy | None = None
    min_value: float | None = None  # inclusive range checks for numeric columns
    max_value: float | None = None
    allowed: tuple[str, ...] | None = None  # closed vocabulary (after lower-casing)
    description: str = ""


@dataclass(frozen=True)
class ForeignKey:
    columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str, ...]


@dataclass(frozen=True)
class TableSpec:
    name: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    time_column: str | None = None  # the event time that daily partitions and freshness use
    foreign_keys: tuple[ForeignKey, ...] = ()
    # Timestamps that must not run backwards, as (earlier, later) pairs; nulls are allowed.
    lifecycle: tuple[tuple[str, str], ...] = ()
    # Pairs of (lat, lng) columns that geographic bounds apply to.
    coordinates: tuple[tuple[str, str], ...] = ()
    description: str = ""

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")


def _id(name: str, **kw) -> Column:
    return Column(name, "VARCHAR", **kw)


_LAT = dict(min_value=-90.0, max_value=90.0)
_LNG = dict(min_value=-180.0, max_value=180.0)

TABLES: dict[str, TableSpec] = {
    t.name: t
    for t in [
        TableSpec(
            "customers",
            key=("customer_id",),
            columns=(
                _id("customer_id", required=True, privacy="pseudonym", description="person, not per order"),
                Column("zip_prefix", "VARCHAR"),
                Column("city", "VARCHAR"),
                Column("state", "VARCHAR"),
                Column(
                    "country",
                    "VARCHAR",
                    description="country name or ISO code, as delivered; picks the calendar's holidays",
                ),
                Column("lat", "DOUBLE", **_LAT),
                Column("lng", "DOUBLE", **_LNG),
                Column("name", "VARCHAR", privacy="pseudonym"),
                Column("email", "VARCHAR", privacy="pseudonym"),
                Column("phone", "VARCHAR", privacy="pseudonym"),
            ),
            coordinates=(("lat", "lng"),),
        ),
        TableSpec(
            "sellers",
            key=("seller_id",),
            columns=(
                _id("seller_id", required=True),
                Column("zip_prefix", "VARCHAR"),
                Column("city", "VARCHAR"),
                Column("state", "VARCHAR"),
                Column("lat", "DOUBLE", **_LAT),
                Column("lng", "DOUBLE", **_LNG),
            ),
            coordinates=(("lat", "lng"),),
        ),
        TableSpec(
            "products",
            key=("product_id",),
            columns=(
                _id("product_id", required=True),
                Column("category", "VARCHAR", description="canonical: lower_snake_case English"),
                Column("title", "VARCHAR"),
                Column("description", "VARCHAR"),
                Column("price", "DOUBLE", min_value=0.0, description="list price"),
                Column("image_uri", "VARCHAR"),
                Column("attributes", "VARCHAR", description="JSON object of source-specific attributes"),
            ),
        ),
        TableSpec(
            "orders",
            key=("order_id",),
            columns=(
                _id("order_id", required=True),
                _id("customer_id", required=True, privacy="pseudonym"),
                Column("status", "VARCHAR"),
                Column("purchased_at", "TIMESTAMP", required=True),
                Column("approved_at", "TIMESTAMP"),
                Column("delivered_at", "TIMESTAMP"),
                Column("estimated_delivery_at", "TIMESTAMP"),
                # Where this order ships to (a customer may ship to many places); resolved to regions by
                # the geography step.  All optional; see docs/mapping.md "Ship-to location".
                Column("ship_city", "VARCHAR"),
                Column("ship_state", "VARCHAR", description="state / province / first-level division"),
                Column(
                    "ship_postal_code", "VARCHAR", description="as written (UK and CA codes have letters)"
                ),
                Column("ship_country", "VARCHAR", description="country name or ISO code, as delivered"),
                Column("ship_lat", "DOUBLE", **_LAT),
                Column("ship_lng", "DOUBLE", **_LNG),
            ),
            time_column="purchased_at",
            foreign_keys=(ForeignKey(("customer_id",), "customers", ("customer_id",)),),
            lifecycle=(
                ("purchased_at", "approved_at"),
                ("purchased_at", "delivered_at"),
                ("purchased_at", "estimated_delivery_at"),
            ),
            coordinates=(("ship_lat", "ship_lng"),),
        ),
        TableSpec(
            "order_items",
            key=("order_id", "item_seq"),
            columns=(
                _id("order_id", required=True),
                Column("item_seq", "INTEGER", required=True, min_value=1),
                _id("product_id", required=True),
                _id("seller_id"),
                Column("price", "DOUBLE", required=True, min_value=0.0),
                Column("freight", "DOUBLE", min_value=0.0),
                Column("quantity", "INTEGER", min_value=1, description="1 when the source has none"),
            ),
            foreign_keys=(
                ForeignKey(("order_id",), "orders", ("order_id",)),
                ForeignKey(("product_id",), "products", ("product_id",)),
                ForeignKey(("seller_id",), "sellers", ("seller_id",)),
            ),
        ),
        TableSpec(
            "payments",
            key=("order_id", "seq"),
            columns=(
                _id("order_id", required=True),
                Column("seq", "INTEGER", required=True, min_value=1),
                Column("payment_type", "VARCHAR"),
                Column("installments", "INTEGER", min_value=0),
                Column("value", "DOUBLE", required=True, min_value=0.0),
            ),
            foreign_keys=(ForeignKey(("order_id",), "orders", ("order_id",)),),
        ),
        TableSpec(
            "reviews",
            key=("review_id",),
            columns=(
                _id("review_id", required=True),
                _id("order_id", required=True),
                _id("customer_id", privacy="pseudonym"),
                _id("product_id"),
                Column("score", "INTEGER", required=True, min_value=1, max_value=5),
                Column("title", "VARCHAR", privacy="mask"),
                Column("text", "VARCHAR", privacy="mask"),
                Column("created_at", "TIMESTAMP", required=True),
            ),
            time_column="created_at",
            foreign_keys=(ForeignKey(("order_id",), "orders", ("order_id",)),),
        ),
        TableSpec(
            "events",
            key=("event_id",),
            columns=(
                _id("event_id", required=True),
                Column("ts", "TIMESTAMP", required=True),
                _id("customer_id", required=True, privacy="pseudonym"),
                _id("session_id"),
                Column("event_type", "VARCHAR", required=True, allowed=("view", "cart", "purchase")),
                _id("product_id", required=True),
            ),
            time_column="ts",
        ),
        TableSpec(
            "regions",
            key=("region_id",),
            columns=(
                _id("region_id", required=True, description="'state:SP' or 'zip5:01012'"),
                Column("level", "VARCHAR", required=True, allowed=("state", "zip3", "zip5")),
                Column("name", "VARCHAR"),
                Column("state", "VARCHAR"),
                Column("lat", "DOUBLE", required=True, **_LAT),
                Column("lng", "DOUBLE", required=True, **_LNG),
            ),
            coordinates=(("lat", "lng"),),
        ),
    ]
}

# Parents before children: staging builds in this order so foreign keys can be checked.
TABLE_ORDER: tuple[str, ...] = (
    "regions",
    "customers",
    "sellers",
    "products",
    "orders",
    "order_items",
    "payments",
    "reviews",
    "events",
)

# Order statuses that are not a purchase: RFM, revenue, segments and interactions leave such orders out.
# Sources write them lower-case (staging lower-cases `status`); a mapping turns its own words into these,
# e.g. "Cancelled" or a "C..." invoice number into `canceled` (docs/mapping.md, "Cancellations and returns").
CANCELED_STATUS = "canceled"
RETURNED_STATUS = "returned"
NON_PURCHASE_STATUSES: tuple[str, ...] = (CANCELED_STATUS, "cancelled", "unavailable", RETURNED_STATUS)

# Load metadata every raw row carries.
LOAD_COLUMNS: tuple[str, ...] = ("_load_id", "_source_file", "_source_row", "_loaded_at")

assert set(TABLE_ORDER) == set(TABLES)


@dataclass(frozen=True)
class ParseHints:
    """How a source writes values, so staging can type them without source-specific code."""

    # naive ISO forms (in ``timezone``) and ISO 8601 with an offset or "Z" (exports from most web shops)
    timestamp_formats: tuple[str, ...] = (
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d",
        "%Y-%m-%dT%H:%M:%S%z",
        "%Y-%m-%dT%H:%M:%S.%f%z",
    )
    timezone: str = "UTC"  # the zone naive timestamps are in; staging converts to UTC
    geo_bounds: Literal["world", "brazil"] = "world"
    decimal: str = "."
    # Two-digit years (``%y``) are read into [two_digit_year_start, two_digit_year_start + 99]:
    # with the default 1970, "69" is 2069 and "70" is 1970.
    two_digit_year_start: int = 1970
    extra: dict = field(default_factory=dict)


# Latitude/longitude box of Brazil (with a small margin) for sources known to be Brazilian.
BRAZIL_BOUNDS = {"lat": (-34.0, 5.5), "lng": (-74.5, -28.5)}


DOC_BEGIN = "<!-- canonical-tables:begin (generated by `python -m ecom_pipeline.canonical`; do not edit) -->"
DOC_END = "<!-- canonical-tables:end -->"


def tables_markdown() -> str:
    """The canonical tables as Markdown, for ``docs/architecture.md`` (a test keeps the two in step)."""
    lines = [DOC_BEGIN]
    for name in TABLE_ORDER:
        spec = TABLES[name]
        lines += [
            "",
            f"### `{name}`",
            "",
            f"Key: `{', '.join(spec.key)}`"
            + (f"; time column `{spec.time_column}`" if spec.time_column else "")
            + "".join(f"; `{', '.join(fk.columns)}` → `{fk.parent}`" for fk in spec.foreign_keys),
            "",
        ]
        lines += [
            "| column | type | required | privacy | allowed values / range | meaning |",
            "|---|---|---|---|---|---|",
        ]
        for c in spec.columns:
            if c.allowed:
                rule = ", ".join(c.allowed)
            elif c.min_value is not None or c.max_value is not None:
                rule = (
                    f"{'' if c.min_value is None else c.min_value} … "
                    f"{'' if c.max_value is None else c.max_value}"
                )
            else:
                rule = ""
            lines.append(
                f"| `{c.name}` | {c.dtype} | {'yes' if c.required else ''} | {c.privacy or ''} "
                f"| {rule} | {c.description} |"
            )
        if spec.lifecycle:
            lines += [
                "",
                "Lifecycle (earlier ≤ later): " + "; ".join(f"`{a}` ≤ `{b}`" for a, b in spec.lifecycle),
            ]
    lines += ["", DOC_END]
    return "\n".join(lines)


if __name__ == "__main__":
    print(tables_markdown())
