"""Normalisation and validation rules of the staging layer, as data (no SQL here).

Reason codes, in the order a row is judged (the first failing rule is the row's ``reason``; ``detail``
lists every failing rule):

1. ``malformed_line``            the reader could not split/decode the line (raw ``_parse_error``)
2. ``missing_required:<col>``    a required column is empty after trimming (or a null token)
3. ``bad_type:<col>``            non-empty text that does not parse as the column's type
4. ``out_of_range:<col>``        numeric value outside the column's [min, max]
5. ``not_allowed:<col>``         value outside the column's closed vocabulary
6. ``future_timestamp:<col>``    timestamp later than now + 1 day (see ``FUTURE_HORIZON_DAYS``)
7. ``ancient_timestamp:<col>``   timestamp before ``MIN_TIMESTAMP`` (1990): a placeholder such as 1900-01-01
                                 or 1970-01-01, not a real order, payment, review or event
8. ``lifecycle:<a>_after_<b>``   timestamp ``a`` later than timestamp ``b`` (both present)
9. ``outside_bounds:<lat>``      coordinates outside the world, or outside Brazil for Brazilian sources
10. ``orphan:<parent>``          foreign key not present in ``staging.<parent>``
11. ``duplicate_key``            another row with the same key and the same values came first (by source
                                 file, row)
    ``duplicate_key_conflict``   another row with the same key but other values came first: the first won
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime

REASON_ORDER: tuple[str, ...] = (
    "malformed_line",
    "missing_required",
    "bad_type",
    "out_of_range",
    "not_allowed",
    "future_timestamp",
    "ancient_timestamp",
    "lifecycle",
    "outside_bounds",
    "orphan",
    "duplicate_key",
    "duplicate_key_conflict",
)
# Reasons whose key is staged all the same (another row of the key was kept): not lost rows.
DUPLICATE_REASONS: tuple[str, ...] = ("duplicate_key", "duplicate_key_conflict")

# Column-name driven normalisation (the same column name means the same thing in every table).
UPPER_COLUMNS = frozenset({"state"})
LOWER_COLUMNS = frozenset({"status", "event_type", "payment_type", "level"})  # + any column with `allowed`
CATEGORY_COLUMNS = frozenset({"category"})
DIGIT_COLUMNS = frozenset({"zip_prefix"})

# Text that means "no value" in a typed (numeric / timestamp) column; compared lower-cased.  Text
# columns keep such words as they are (a product may be called "None").
NULL_TOKENS: tuple[str, ...] = ("nan", "nat", "null", "none", "na", "n/a", "-")

# Characters trimmed from both ends of every value: space, tab, LF, VT, FF, CR, NBSP.
TRIM_CHARS = " \t\n\x0b\x0c\r\xa0"

# How far in the future a timestamp may lie.  Estimated delivery dates are legitimately in the
# future for recent orders, so they get a year instead of a day.
DEFAULT_FUTURE_HORIZON_DAYS = 1
FUTURE_HORIZON_DAYS: dict[str, int] = {"estimated_delivery_at": 366}

# Earliest plausible timestamp: earlier ones are export placeholders (1900-01-01, 1970-01-01 epoch zero).
MIN_TIMESTAMP = datetime(1990, 1, 1)

WORLD_BOUNDS = {"lat": (-90.0, 90.0), "lng": (-180.0, 180.0)}

UTC_NAMES = frozenset({"utc", "etc/utc", "gmt", "etc/gmt", "z", "zulu", "universal", "etc/universal"})


def canonical_category(text: str | None) -> str | None:
    """Python twin of the SQL category normalisation: lower, strip accents, non-alnum runs -> '_'."""
    if text is None:
        return None
    t = unicodedata.normalize("NFKD", text.strip(TRIM_CHARS))
    t = "".join(ch for ch in t if not unicodedata.combining(ch)).lower()
    t = re.sub(r"[^a-z0-9]+", "_", t).strip("_")
    return t or None
