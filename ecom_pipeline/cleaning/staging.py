"""Staging layer: ``raw.<table>`` (all text) -> typed, validated, privacy-protected ``staging.<table>``.

Everything is one vectorised DuckDB pipeline per table (no per-row Python; pseudonyms are an HMAC
written in SQL, see :mod:`ecom_pipeline.cleaning.privacy`):

1. normalise text: trim, empty -> NULL, null tokens in typed columns, column-specific canonical forms
   (category snake case, state upper, vocabularies lower, zip digits);
2. type: ``TRY_CAST`` numbers (honouring the source's decimal separator), ``try_strptime`` timestamps
   with the source's formats, converted from the source's time zone to naive UTC (through a per-hour
   offset map, exact ICU conversion only in hours where the offset changes);
3. protect: pseudonymise ``privacy="pseudonym"`` columns, mask ``privacy="mask"`` text;
4. judge every row against the rules of :mod:`ecom_pipeline.cleaning.rules`; the first failing rule is
   its reason;
5. among the rows that pass, keep the first per key (by source file, source row); later ones are
   ``duplicate_key``.

The result is built in ``staging.<table>__building`` and swapped in, together with this table's rows of
``staging.quarantine``, in one transaction, after checking raw rows = staged rows + quarantined rows.
Staged tables carry the canonical columns (spec types) plus lineage ``_load_id``, ``_source_file``,
``_source_row``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import duckdb

from ecom_pipeline.canonical import BRAZIL_BOUNDS, TABLES, Column, ParseHints, TableSpec
from ecom_pipeline.cleaning import rules
from ecom_pipeline.cleaning.privacy import PSEUDONYM_FUNCTION, mask_sql, register_privacy_functions
from ecom_pipeline.warehouse.lake import is_lake, run_transaction

STAGING_SCHEMA = "staging"
QUARANTINE_TABLE = "quarantine"
LINEAGE_COLUMNS = ("_load_id", "_source_file", "_source_row")
_DETAIL_SEP = "; "
_MAX_PARSE_ERROR_CHARS = 500

QUARANTINE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("table_name", "VARCHAR", "canonical table the row was meant for"),
    ("load_id", "VARCHAR", "raw load the row came from"),
    ("source_file", "VARCHAR", "file (or generator) the row came from"),
    ("source_row", "BIGINT", "1-based data row number inside source_file"),
    ("reason", "VARCHAR", "first failing rule, e.g. missing_required:order_id"),
    ("detail", "VARCHAR", "every failing rule ('; '-separated), or the reader's parse error"),
    ("original_row", "VARCHAR", "JSON of the raw canonical columns, pseudonymised/masked like staging"),
    ("quarantined_at", "TIMESTAMP", "UTC time of the staging run"),
)


class StagingError(RuntimeError):
    """Staging could not produce a consistent result (nothing was changed)."""


@dataclass
class StageResult:
    table: str
    load_id: str | None
    raw_rows: int
    staged_rows: int
    quarantined_rows: int
    reasons: dict[str, int]
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.raw_rows / self.seconds if self.seconds > 0 else float("inf")


# --------------------------------------------------------------------------------------------- helpers
def qi(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _ts_lit(ts: datetime) -> str:
    return f"TIMESTAMP '{ts.strftime('%Y-%m-%d %H:%M:%S.%f')}'"


def _num(value: float) -> str:
    return repr(float(value))


def _scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None):
    rows = con.execute(sql, params or []).fetchall()  # fetchall: leaves no unfinished result behind
    return rows[0][0]


def column_schema(table: str) -> list[tuple[str, str, str]]:
    """(name, DuckDB type, description) of ``staging.<table>`` for UI metadata."""
    if table == QUARANTINE_TABLE:
        return list(QUARANTINE_COLUMNS)
    spec = TABLES[table]
    out = []
    for c in spec.columns:
        desc = c.description
        extra = []
        if c in _key_columns(spec):
            extra.append("key")
        if c.required:
            extra.append("required")
        if c.privacy == "pseudonym":
            extra.append("HMAC-SHA256 pseudonym (32 hex)")
        elif c.privacy == "mask":
            extra.append("e-mails/URLs/CPF/CNPJ/phones masked")
        if c.min_value is not None or c.max_value is not None:
            extra.append(f"range [{c.min_value}, {c.max_value}]")
        if c.allowed:
            extra.append("one of " + "/".join(c.allowed))
        if c.dtype == "TIMESTAMP":
            extra.append("UTC")
        if extra:
            desc = (desc + "; " if desc else "") + ", ".join(extra)
        out.append((c.name, c.dtype, desc))
    out += [
        ("_load_id", "VARCHAR", "raw load the row came from"),
        ("_source_file", "VARCHAR", "file (or generator) the row came from"),
        ("_source_row", "BIGINT", "1-based data row number inside _source_file"),
    ]
    return out


def _key_columns(spec: TableSpec) -> list[Column]:
    return [spec.column(k) for k in spec.key]


def _table_columns(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> list[str] | None:
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ? "
        "ORDER BY ordinal_position",
        [schema, table],
    ).fetchall()
    return [r[0] for r in rows] or None


def ensure_quarantine_table(con: duckdb.DuckDBPyConnection, staging_schema: str = STAGING_SCHEMA) -> None:
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {qi(staging_schema)}")
    cols = ", ".join(f"{qi(n)} {t}" for n, t, _ in QUARANTINE_COLUMNS)
    con.execute(f"CREATE TABLE IF NOT EXISTS {qi(staging_schema)}.{qi(QUARANTINE_TABLE)} ({cols})")


# ----------------------------------------------------------------------------------- SQL per column
def _trim_sql(x: str) -> str:
    """``x`` trimmed of rules.TRIM_CHARS, '' -> NULL.

    DuckDB's ``trim(x, chars)`` is slow (~300 ns a value); testing the first and last character first
    makes clean values (nearly all of them) about four times cheaper.  The test may let through more than
    it must (any value starting below '!', the empty one), never less: ``trim`` decides.  Every trimmed
    character but U+00A0 is ASCII below '!', so the first one is tested by one byte-wise comparison instead
    of a ``prefix`` per character (45 % less time over the six columns of ``events``).
    """
    if any(ch >= "!" and ch != "\xa0" for ch in rules.TRIM_CHARS):
        raise ValueError("the trim test assumes TRIM_CHARS below '!' plus U+00A0")
    ends = [f"suffix({x}, chr({ord(ch)}))" for ch in rules.TRIM_CHARS]
    test = " OR ".join([f"{x} < '!'", f"prefix({x}, chr(160))", *ends])
    return f"NULLIF(CASE WHEN {test} THEN trim({x}, {_lit(rules.TRIM_CHARS)}) ELSE {x} END, '')"


def _normalise_sql(c: Column, t: str) -> str:
    """Column-specific canonical text form of the trimmed, non-empty text ``t``."""
    if c.dtype != "VARCHAR":
        # list_contains rather than IN: DuckDB plans a constant IN-list as a join.
        tokens = ", ".join(_lit(x) for x in rules.NULL_TOKENS)
        longest = max(len(x) for x in rules.NULL_TOKENS)
        return (
            f"CASE WHEN length({t}) <= {longest} AND list_contains([{tokens}], lower({t})) "
            f"THEN NULL ELSE {t} END"
        )
    if c.name in rules.CATEGORY_COLUMNS:
        return f"NULLIF(trim(regexp_replace(lower(strip_accents({t})), '[^a-z0-9]+', '_', 'g'), '_'), '')"
    if c.name in rules.DIGIT_COLUMNS:
        return f"NULLIF(regexp_replace({t}, '[^0-9]+', '', 'g'), '')"
    if c.name in rules.UPPER_COLUMNS:
        return f"upper({t})"
    if c.name in rules.LOWER_COLUMNS or c.allowed:
        return f"lower({t})"
    return t


def _converts_timezone(spec: TableSpec, hints: ParseHints) -> bool:
    """Whether naive timestamps of ``spec`` must be converted from ``hints.timezone`` to UTC."""
    naive = [f for f in hints.timestamp_formats if "%z" not in f and "%Z" not in f]
    return (
        bool(naive)
        and hints.timezone.strip().lower() not in rules.UTC_NAMES
        and any(c.dtype == "TIMESTAMP" for c in spec.columns)
    )


def _ts_formats(hints: ParseHints) -> tuple[list[str], list[str]]:
    fmts = list(hints.timestamp_formats)
    if not fmts:
        raise ValueError("ParseHints.timestamp_formats is empty")
    aware = [f for f in fmts if "%z" in f or "%Z" in f]
    return [f for f in fmts if f not in aware], aware


def _fmt_list(fmts: list[str]) -> str:
    return "[" + ", ".join(_lit(f) for f in fmts) + "]"


def _cast_sql(c: Column, n: str, hints: ParseHints) -> str:
    """First typing step (may leave NaN/inf/fractions that :func:`_value_sql` rejects).

    Timestamps: the parse with the naive formats, still in the source's local time (converted to UTC
    in :func:`_value_sql`); NULL when only offset-carrying formats match.
    """
    if c.dtype in ("DOUBLE", "INTEGER"):
        # The other separator is accepted only as a thousands separator in exact groups of three
        # ("1,234.56" / "1.234,56"); anything else ("12.50" in a decimal-comma file, "12,50" in a
        # decimal-point file) is NULL, hence bad_type, rather than a number off by a factor of 100.
        if hints.decimal == ",":
            grouped, plain = r"[+-]?[0-9]{1,3}(\.[0-9]{3})+(,[0-9]*)?", f"replace({n}, ',', '.')"
            ungrouped = f"replace(replace({n}, '.', ''), ',', '.')"
            other = "'.'"
        elif hints.decimal == ".":
            grouped, plain, ungrouped = r"[+-]?[0-9]{1,3}(,[0-9]{3})+(\.[0-9]*)?", n, f"replace({n}, ',', '')"
            other = "','"
        else:
            raise ValueError(f"unsupported decimal separator {hints.decimal!r}")
        return (
            f"CASE WHEN NOT contains({n}, {other}) THEN TRY_CAST({plain} AS DOUBLE) "
            f"WHEN regexp_full_match({n}, {_lit(grouped)}) THEN TRY_CAST({ungrouped} AS DOUBLE) END"
        )
    if c.dtype == "TIMESTAMP":
        naive, _ = _ts_formats(hints)
        if not naive:
            return "CAST(NULL AS TIMESTAMP)"
        if not any("%y" in f for f in naive):
            return f"try_strptime({n}, {_fmt_list(naive)})"
        # Two-digit years: DuckDB reads "%y" into 1969..2068; move each such value by whole centuries into
        # [start, start + 99].  Formats are tried one by one, in order, so only %y matches are moved.
        start = int(hints.two_digit_year_start)
        whens = []
        for f in naive:
            parsed = f"try_strptime({n}, {_lit(f)})"
            value = parsed
            if "%y" in f:
                value = (
                    f"{parsed} + to_years(CAST(100 * floor(({start + 99} - year({parsed})) / 100.0) "
                    "AS INTEGER))"
                )
            whens.append(f"WHEN {parsed} IS NOT NULL THEN {value}")
        return f"CASE {' '.join(whens)} END"
    if c.dtype == "VARCHAR":
        return n
    raise ValueError(f"unsupported staging type {c.dtype} for column {c.name}")


def _aware_sql(n: str, hints: ParseHints) -> str | None:
    """UTC value of text parsed with the offset-carrying formats (``%z``/``%Z``), if there are any."""
    _, aware = _ts_formats(hints)
    if not aware:
        return None
    if any(f.endswith("%z") for f in aware):  # ISO 8601 "Z" (UTC), which DuckDB's %z does not read
        n = f"CASE WHEN suffix({n}, 'Z') THEN left({n}, -1) || '+00:00' ELSE {n} END"
    return f"timezone('UTC', try_strptime({n}, {_fmt_list(aware)}))"


def _value_sql(
    c: Column, x: str, *, tz: str | None = None, tzmap: str | None = None, aware: str | None = None
) -> str:
    """Final staged value from the cast ``x`` (NULL where the text did not give a valid value).

    Timestamps in zone ``tz``: the UTC offset comes from ``tzmap`` (the offset of each local hour,
    computed once per distinct hour by :func:`_tz_map_sql`); only hours in which the offset changes
    (DST transitions) take DuckDB's per-value ICU conversion, which is ~10x slower.
    """
    if c.dtype == "TIMESTAMP":
        if tz is not None:
            x = (
                f"CASE WHEN {tzmap}.exact THEN {x} + {tzmap}.off "
                f"ELSE timezone('UTC', timezone({_lit(tz)}, {x})) END"
            )
        if aware is not None:
            x = f"coalesce({x}, {aware})"
        return f"CAST({x} AS TIMESTAMP)"
    if c.dtype == "DOUBLE":
        return f"CASE WHEN isfinite({x}) THEN {x} END"
    if c.dtype == "INTEGER":
        return (
            f"CASE WHEN {x} = trunc({x}) AND {x} BETWEEN -2147483648 AND 2147483647 "
            f"THEN CAST({x} AS INTEGER) END"
        )
    if c.privacy == "pseudonym":
        return f"{PSEUDONYM_FUNCTION}({x})"
    if c.privacy == "mask":
        return mask_sql(x)
    return x


# ------------------------------------------------------------------------------------------ the query
def _typed_ctes(spec: TableSpec, raw_cols: set[str], raw_rel: str, hints: ParseHints) -> str:
    """``l1`` trimmed text t<i>, ``l2`` normalised text n<i>, ``l3`` first casts x<i> (+ lineage)."""
    cols = spec.columns

    def raw(name: str, cast: str = "VARCHAR") -> str:
        return f"r.{qi(name)}" if name in raw_cols else f"CAST(NULL AS {cast})"

    l1 = ", ".join(f"{_trim_sql(raw(c.name))} AS t{i}" for i, c in enumerate(cols))
    l1 = (
        f"SELECT r.rowid AS _rid, {raw('_load_id')} AS _load_id, {raw('_source_file')} AS _source_file, "
        f"{raw('_source_row', 'BIGINT')} AS _source_row, "
        f"NULLIF(left({raw('_parse_error')}, {_MAX_PARSE_ERROR_CHARS}), '') AS _parse_error, {l1} "
        f"FROM {raw_rel} r"
    )
    l2 = ", ".join(f"{_normalise_sql(c, f't{i}')} AS n{i}" for i, c in enumerate(cols))
    l3 = ", ".join(f"{_cast_sql(c, f'n{i}', hints)} AS x{i}" for i, c in enumerate(cols))
    return f"l1 AS ({l1}), l2 AS (SELECT *, {l2} FROM l1), l3 AS (SELECT *, {l3} FROM l2)"


def _tz_map_sql(spec: TableSpec, raw_cols: set[str], raw_rel: str, hints: ParseHints) -> str:
    """Every distinct local hour of the table's naive timestamps, its UTC offset, and whether that
    offset holds for the whole hour (false in the hour of a DST transition)."""
    tz = _lit(hints.timezone)
    xs = ", ".join(f"x{i}" for i, c in enumerate(spec.columns) if c.dtype == "TIMESTAMP")
    hours = (
        f"SELECT DISTINCT date_trunc('hour', x) AS h FROM (SELECT unnest([{xs}]) AS x FROM l3) "
        "WHERE x IS NOT NULL"
    )
    end = "h + INTERVAL 3599 SECOND"
    return (
        f"WITH {_typed_ctes(spec, raw_cols, raw_rel, hints)}, hours AS ({hours}) "
        f"SELECT h, timezone('UTC', timezone({tz}, h)) - h AS off, "
        f"(timezone('UTC', timezone({tz}, {end})) - ({end})) = (timezone('UTC', timezone({tz}, h)) - h) AS "
        "exact FROM hours"
    )


def _pseudonym_columns(spec: TableSpec, raw_cols: set[str]) -> list[int]:
    """Positions of the pseudonymised columns that raw has (a missing one is all NULL: nothing to map)."""
    return [i for i, c in enumerate(spec.columns) if c.privacy == "pseudonym" and c.name in raw_cols]


def _pseudonym_map_sql(c: Column, raw_rel: str) -> str:
    """Every distinct staged text of the pseudonymised column ``c`` with its pseudonym.

    The keyed HMAC is the costliest expression of staging (two SHA-256 per value); a customer id repeats
    in every order, review and event of that customer (1.2M events, 60k customers at 100k orders), so it is
    computed once per distinct value and joined back.  The text is the one :func:`_typed_ctes` stages."""
    text = _normalise_sql(c, _trim_sql(f"r.{qi(c.name)}"))
    return (
        f"SELECT v, {PSEUDONYM_FUNCTION}(v) AS p FROM (SELECT DISTINCT {text} AS v FROM {raw_rel} r) "
        "WHERE v IS NOT NULL"
    )


def _build_work_sql(
    spec: TableSpec,
    raw_cols: set[str],
    raw_rel: str,
    hints: ParseHints,
    now: datetime,
    parents: dict[int, str],
    tzmap: str | None = None,
    pseudonym_maps: dict[int, str] | None = None,
) -> str:
    """SELECT producing one row per raw row: staged columns, lineage, raw rowid, _reason, _detail.

    ``_reason`` is NULL for rows that pass every rule except the key's uniqueness (checked later).
    ``tzmap``: the temp table made by :func:`_tz_map_sql`, required when timestamps are converted.
    ``pseudonym_maps``: column position -> temp table made by :func:`_pseudonym_map_sql`; a pseudonymised
    column without one is pseudonymised value by value.
    """
    pseudonym_maps = pseudonym_maps or {}
    cols = spec.columns
    idx = {c.name: i for i, c in enumerate(cols)}
    convert = _converts_timezone(spec, hints)
    if convert and tzmap is None:
        raise ValueError("timezone conversion needs the hour offset map (_tz_map_sql)")

    # l4: final values; timestamps joined to their local hour's UTC offset.
    l4_vals, l4_joins = [], []
    for i, c in enumerate(cols):
        if c.dtype == "TIMESTAMP":
            alias = f"tz{i}"
            if convert:
                l4_joins.append(f"LEFT JOIN {qi(tzmap)} {alias} ON {alias}.h = date_trunc('hour', l3.x{i})")
            l4_vals.append(
                _value_sql(
                    c,
                    f"l3.x{i}",
                    tz=hints.timezone if convert else None,
                    tzmap=alias,
                    aware=_aware_sql(f"l3.n{i}", hints),
                )
                + f" AS v{i}"
            )
        elif i in pseudonym_maps:
            l4_joins.append(f"LEFT JOIN {qi(pseudonym_maps[i])} ps{i} ON ps{i}.v = l3.x{i}")
            l4_vals.append(f"ps{i}.p AS v{i}")
        else:
            l4_vals.append(f"{_value_sql(c, f'l3.x{i}')} AS v{i}")
    l4 = f"SELECT l3.*, {', '.join(l4_vals)} FROM l3 {' '.join(l4_joins)}"

    # Foreign-key presence flags (joins against distinct parent keys).
    joins, fk_flags = [], {}
    for j, fk in enumerate(spec.foreign_keys):
        if j not in parents:
            continue
        parent_rel = parents[j]
        sel = ", ".join(f"{qi(pc)} AS k{m}" for m, pc in enumerate(fk.parent_columns))
        on = " AND ".join(f"fk{j}.k{m} = w.v{idx[cc]}" for m, cc in enumerate(fk.columns))
        joins.append(f"LEFT JOIN (SELECT DISTINCT {sel}, true AS present FROM {parent_rel}) fk{j} ON {on}")
        fk_flags[j] = f"fk{j}.present"

    # L5: rule checks, in reason order.
    checks: list[str] = []

    def check(cond: str, code: str) -> None:
        checks.append(f"CASE WHEN {cond} THEN {_lit(code)} END")

    for i, c in enumerate(cols):
        if c.required:
            check(f"w.n{i} IS NULL", f"missing_required:{c.name}")
    for i, c in enumerate(cols):
        if c.dtype != "VARCHAR":
            check(f"w.n{i} IS NOT NULL AND w.v{i} IS NULL", f"bad_type:{c.name}")
    for i, c in enumerate(cols):
        conds = []
        if c.min_value is not None:
            conds.append(f"w.v{i} < {_num(c.min_value)}")
        if c.max_value is not None:
            conds.append(f"w.v{i} > {_num(c.max_value)}")
        if conds:
            check(" OR ".join(conds), f"out_of_range:{c.name}")
    for i, c in enumerate(cols):
        if c.allowed:
            allowed = ", ".join(_lit(a.lower()) for a in c.allowed)
            check(f"NOT list_contains([{allowed}], w.v{i})", f"not_allowed:{c.name}")
    for i, c in enumerate(cols):
        if c.dtype == "TIMESTAMP":
            days = rules.FUTURE_HORIZON_DAYS.get(c.name, rules.DEFAULT_FUTURE_HORIZON_DAYS)
            check(f"w.v{i} > {_ts_lit(now + timedelta(days=days))}", f"future_timestamp:{c.name}")
    for i, c in enumerate(cols):
        if c.dtype == "TIMESTAMP":
            check(f"w.v{i} < {_ts_lit(rules.MIN_TIMESTAMP)}", f"ancient_timestamp:{c.name}")
    for earlier, later in spec.lifecycle:
        check(f"w.v{idx[earlier]} > w.v{idx[later]}", f"lifecycle:{earlier}_after_{later}")
    for lat, lng in spec.coordinates:
        boxes = [rules.WORLD_BOUNDS]
        if hints.geo_bounds == "brazil":
            boxes.append(BRAZIL_BOUNDS)
        elif hints.geo_bounds != "world":
            raise ValueError(f"unknown geo_bounds {hints.geo_bounds!r}")
        conds = []
        for box in boxes:
            (la0, la1), (lo0, lo1) = box["lat"], box["lng"]
            conds.append(f"w.v{idx[lat]} NOT BETWEEN {_num(la0)} AND {_num(la1)}")
            conds.append(f"w.v{idx[lng]} NOT BETWEEN {_num(lo0)} AND {_num(lo1)}")
        check(
            f"w.v{idx[lat]} IS NOT NULL AND w.v{idx[lng]} IS NOT NULL AND ({' OR '.join(conds)})",
            f"outside_bounds:{lat}",
        )
    for j, fk in enumerate(spec.foreign_keys):
        if j in fk_flags:
            notnull = " AND ".join(f"w.v{idx[cc]} IS NOT NULL" for cc in fk.columns)
            check(f"{notnull} AND {fk_flags[j]} IS NULL", f"orphan:{fk.parent}")

    fail = f"concat_ws({_lit(_DETAIL_SEP)}, {', '.join(checks)})" if checks else "''"
    values = ", ".join(f"w.v{i}" for i in range(len(cols)))
    l5 = (
        f"SELECT w._rid, w._load_id, w._source_file, w._source_row, w._parse_error, {values}, "
        f"{fail} AS _fail FROM l4 w {' '.join(joins)}"
    )
    l6 = (
        "SELECT *, CASE WHEN _parse_error IS NOT NULL THEN 'malformed_line' "
        f"WHEN _fail <> '' THEN split_part(_fail, {_lit(_DETAIL_SEP)}, 1) END AS _reason, "
        "CASE WHEN _parse_error IS NOT NULL THEN _parse_error WHEN _fail <> '' THEN _fail END AS _detail "
        "FROM l5"
    )
    staged = ", ".join(f"CAST(v{i} AS {c.dtype}) AS {qi(c.name)}" for i, c in enumerate(cols))
    return (
        f"WITH {_typed_ctes(spec, raw_cols, raw_rel, hints)}, "
        f"l4 AS ({l4}), l5 AS ({l5}), l6 AS ({l6}) "
        f"SELECT {staged}, _load_id, _source_file, CAST(_source_row AS BIGINT) AS _source_row, "
        "_rid, _reason, _detail FROM l6"
    )


def _original_row_sql(spec: TableSpec, raw_cols: set[str]) -> str:
    """JSON of the raw canonical columns with the same privacy treatment as staging.

    A malformed line may have its text in the wrong columns (the reader puts the whole line in the
    first one), so for such rows every column of a table holding pseudonymised data is pseudonymised
    (and every column of a table holding masked text is masked).
    """
    has_pseudonym = any(c.privacy == "pseudonym" for c in spec.columns)
    has_mask = any(c.privacy == "mask" for c in spec.columns)
    parts = []
    for c in spec.columns:
        if c.name not in raw_cols:
            parts.append(f"{_lit(c.name)}, CAST(NULL AS VARCHAR)")
            continue
        r = f"r.{qi(c.name)}"
        trimmed = _trim_sql(r)
        if c.privacy == "pseudonym":
            normal = f"{PSEUDONYM_FUNCTION}({trimmed})"
        elif c.privacy == "mask":
            normal = mask_sql(r)
        else:
            normal = r
        if has_pseudonym and c.privacy != "pseudonym":
            expr = (
                "CASE WHEN w._reason = 'malformed_line' THEN "
                f"{PSEUDONYM_FUNCTION}({trimmed}) ELSE {normal} END"
            )
        elif has_mask and c.privacy is None:
            expr = f"CASE WHEN w._reason = 'malformed_line' THEN {mask_sql(r)} ELSE {normal} END"
        else:
            expr = normal
        parts.append(f"{_lit(c.name)}, {expr}")
    return f"CAST(json_object({', '.join(parts)}) AS VARCHAR)"


# ------------------------------------------------------------------------------------------ stage_table
def stage_table(
    con: duckdb.DuckDBPyConnection,
    table: str,
    *,
    hints: ParseHints | None = None,
    pseudonym_key: bytes,
    raw_schema: str = "raw",
    staging_schema: str = STAGING_SCHEMA,
    now: datetime | None = None,
) -> StageResult:
    """Rebuild ``staging.<table>`` and its quarantine rows from all rows of ``raw.<table>``."""
    start = time.perf_counter()
    if table not in TABLES:
        raise ValueError(f"unknown canonical table {table!r}; known: {sorted(TABLES)}")
    if table == QUARANTINE_TABLE:
        raise ValueError("'quarantine' is reserved")
    spec = TABLES[table]
    hints = hints or ParseHints()
    notes: list[str] = []
    if now is None:
        now = datetime.now(UTC)
    if now.tzinfo is not None:
        now = now.astimezone(UTC).replace(tzinfo=None)

    raw_cols_list = _table_columns(con, raw_schema, table)
    if raw_cols_list is None:
        raise StagingError(f"{raw_schema}.{table} does not exist: load the raw table before staging it")
    raw_cols = set(raw_cols_list)
    missing = [c for c in spec.column_names if c not in raw_cols]
    if missing:
        notes.append(f"{raw_schema}.{table} lacks columns {missing}: staged as NULL")
    if "_source_file" not in raw_cols or "_source_row" not in raw_cols:
        raise StagingError(f"{raw_schema}.{table} lacks lineage columns _source_file/_source_row")
    if _converts_timezone(spec, hints):
        if not _scalar(con, "SELECT count(*) FROM pg_timezone_names() WHERE name = ?", [hints.timezone]):
            raise ValueError(f"unknown time zone {hints.timezone!r} in ParseHints.timezone")
        notes.append(f"timestamps converted from {hints.timezone} to UTC")

    register_privacy_functions(con, pseudonym_key)
    ensure_quarantine_table(con, staging_schema)
    raw_rel = f"{qi(raw_schema)}.{qi(table)}"
    final_rel = f"{qi(staging_schema)}.{qi(table)}"
    # DuckLake: other writers share the schema, so the table being built is this connection's own (temp),
    # copied in at the swap
    lake = is_lake(con)
    building_rel = (
        f"temp.{qi(table + '__building')}" if lake else f"{qi(staging_schema)}.{qi(table + '__building')}"
    )
    quarantine_rel = f"{qi(staging_schema)}.{qi(QUARANTINE_TABLE)}"
    qwork = f"_stage_quarantine_{table}"
    if lake:  # another writer may replace raw meanwhile: stage one snapshot of it (rowids stay consistent)
        raw_copy = f"temp.{qi('_stage_raw_' + table)}"
        con.execute(f"CREATE OR REPLACE TEMP TABLE {qi('_stage_raw_' + table)} AS SELECT * FROM {raw_rel}")
        raw_rel = raw_copy

    load_col = qi("_load_id") if "_load_id" in raw_cols else "CAST(NULL AS VARCHAR)"
    load_id, first_load = con.execute(f"SELECT max({load_col}), min({load_col}) FROM {raw_rel}").fetchall()[0]
    if load_id != first_load:
        notes.append(
            f"{raw_schema}.{table} holds rows of several loads ({first_load} .. {load_id}); staged all"
        )

    parents: dict[int, str] = {}
    for j, fk in enumerate(spec.foreign_keys):
        pcols = _table_columns(con, staging_schema, fk.parent)
        if pcols is None:
            notes.append(
                f"orphan check {fk.columns}->{fk.parent} skipped: {staging_schema}.{fk.parent} "
                "does not exist (stage parents first, see canonical.TABLE_ORDER)"
            )
        elif not set(fk.parent_columns) <= set(pcols):
            notes.append(
                f"orphan check {fk.columns}->{fk.parent} skipped: {staging_schema}.{fk.parent} "
                f"lacks {fk.parent_columns}"
            )
        else:
            parents[j] = f"{qi(staging_schema)}.{qi(fk.parent)}"

    tzmap = f"_stage_tz_{table}" if _converts_timezone(spec, hints) else None
    pseudonym_maps = {i: f"_stage_pseudonyms_{table}_{i}" for i in _pseudonym_columns(spec, raw_cols)}
    work_sql = _build_work_sql(spec, raw_cols, raw_rel, hints, now, parents, tzmap, pseudonym_maps)
    keys = [qi(k) for k in spec.key]
    key_list = ", ".join(keys)
    original = _original_row_sql(spec, raw_cols)
    try:
        con.execute(f"DROP TABLE IF EXISTS {building_rel}")
        con.execute(f"DROP TABLE IF EXISTS temp.{qi(qwork)}")
        if tzmap:
            con.execute(f"DROP TABLE IF EXISTS temp.{qi(tzmap)}")
            con.execute(f"CREATE TEMP TABLE {qi(tzmap)} AS {_tz_map_sql(spec, raw_cols, raw_rel, hints)}")
        for i, name in pseudonym_maps.items():
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {qi(name)} AS {_pseudonym_map_sql(spec.columns[i], raw_rel)}"
            )
        # 1. every raw row, typed and protected, with its first failing rule (NULL when it passes).
        create = (
            f"CREATE TEMP TABLE {building_rel.removeprefix('temp.')}"
            if lake
            else f"CREATE TABLE {building_rel}"
        )
        con.execute(f"{create} AS {work_sql}")
        # 2. duplicate keys among the rows that pass everything else: the first by (file, row) stays.  A later
        #    row equal to the kept one in every staged column is `duplicate_key`; one that disagrees
        #    (same product id, another title) is `duplicate_key_conflict`: the first value won.
        on = " AND ".join(f"s.{k} = k.{k}" for k in keys)
        row_hash = "hash(" + ", ".join(f"s.{qi(c.name)}" for c in spec.columns) + ")"
        con.execute(
            f"UPDATE {building_rel} AS b SET _reason = d._dup_reason, "
            "_detail = d._dup_reason || ' (kept ' || d._first_file || ':' || d._first_row || ')' "
            "FROM (SELECT *, CASE WHEN _hash = _first_hash THEN 'duplicate_key' "
            "                     ELSE 'duplicate_key_conflict' END AS _dup_reason FROM ("
            "  SELECT s._rid, row_number() OVER w AS _rn, first_value(s._source_file) OVER w AS _first_file, "
            "         first_value(s._source_row) OVER w AS _first_row, "
            f"        {row_hash} AS _hash, first_value({row_hash}) OVER w AS _first_hash "
            f"  FROM {building_rel} s SEMI JOIN ("
            f"    SELECT {key_list} FROM {building_rel} WHERE _reason IS NULL "
            f"    GROUP BY {key_list} HAVING count(*) > 1) k ON {on} "
            "  WHERE s._reason IS NULL "
            f"  WINDOW w AS (PARTITION BY {', '.join('s.' + k for k in keys)} "
            "               ORDER BY s._source_file, s._source_row, s._rid)"
            ") WHERE _rn > 1) d "
            "WHERE b._rid = d._rid"
        )
        # 3. quarantine rows (privacy-protected copy of the raw row), then drop them from the build.
        con.execute(
            f"CREATE TEMP TABLE {qi(qwork)} AS SELECT {_lit(table)} AS table_name, "
            f"coalesce(w._load_id, {_lit(load_id) if load_id else 'NULL'}) AS load_id, "
            "w._source_file AS source_file, w._source_row AS source_row, w._reason AS reason, "
            f"w._detail AS detail, {original} AS original_row, {_ts_lit(now)} AS quarantined_at "
            f"FROM {building_rel} w JOIN {raw_rel} r ON r.rowid = w._rid "
            "WHERE w._reason IS NOT NULL ORDER BY w._source_file, w._source_row"
        )
        con.execute(f"DELETE FROM {building_rel} WHERE _reason IS NOT NULL")
        for helper in ("_rid", "_reason", "_detail"):
            con.execute(f"ALTER TABLE {building_rel} DROP COLUMN {helper}")
        raw_rows = _scalar(con, f"SELECT count(*) FROM {raw_rel}")
        reasons = dict(
            con.execute(
                f"SELECT reason, count(*) FROM {qi(qwork)} GROUP BY reason ORDER BY count(*) DESC, reason"
            ).fetchall()
        )

        def swap(c) -> tuple[int, int]:  # re-run whole when a DuckLake commit loses to another writer
            c.execute(f"DROP TABLE IF EXISTS {final_rel}")
            if lake:
                c.execute(f"CREATE TABLE {final_rel} AS SELECT * FROM {building_rel}")
            else:
                c.execute(f"ALTER TABLE {building_rel} RENAME TO {qi(table)}")
            c.execute(f"DELETE FROM {quarantine_rel} WHERE table_name = ?", [table])
            c.execute(f"INSERT INTO {quarantine_rel} SELECT * FROM {qi(qwork)}")
            staged = _scalar(c, f"SELECT count(*) FROM {final_rel}")
            quarantined = _scalar(c, f"SELECT count(*) FROM {quarantine_rel} WHERE table_name = ?", [table])
            if raw_rows != staged + quarantined:
                raise StagingError(
                    f"invariant violated for {table}: raw {raw_rows} != staged {staged} + "
                    f"quarantined {quarantined}; nothing was changed"
                )
            return staged, quarantined

        staged_rows, quarantined_rows = run_transaction(con, swap)
    finally:
        con.execute(f"DROP TABLE IF EXISTS temp.{qi(qwork)}")
        if tzmap:
            con.execute(f"DROP TABLE IF EXISTS temp.{qi(tzmap)}")
        for name in pseudonym_maps.values():
            con.execute(f"DROP TABLE IF EXISTS temp.{qi(name)}")
        con.execute(f"DROP TABLE IF EXISTS {building_rel}")
        if lake:
            con.execute(f"DROP TABLE IF EXISTS {raw_rel}")

    return StageResult(
        table=table,
        load_id=load_id,
        raw_rows=raw_rows,
        staged_rows=staged_rows,
        quarantined_rows=quarantined_rows,
        reasons=reasons,
        seconds=time.perf_counter() - start,
        notes=notes,
    )
