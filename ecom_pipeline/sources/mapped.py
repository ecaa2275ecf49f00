"""A shop's own CSV/Parquet files, described by a YAML mapping file (format: ``docs/mapping.md``).

The mapping says, per canonical table, which file feeds it and which source column fills which
canonical column.  Everything is validated when the source is built (``MappedSource.from_yaml``), so a
typo fails at once with the mapping file and the key in the message rather than as an empty table later:

* unknown top-level / table-level keys, unknown canonical tables or columns, a canonical column filled
  twice, key or required columns left unfilled, bad timezone / timestamp formats / geo bounds;
* files that do not exist, and mapped source columns that are not in a file's header (``SourceError``
  naming the data file and the column, with the closest header name as a hint).

Reading streams each file in chunks through :mod:`ecom_pipeline.sources.files` (bad lines, bad bytes and
damaged archives are handled there).  One file may feed several tables, e.g. a line-level "orders export"
feeds orders, order_items, customers and products.  For such dimension tables ``deduplicate: true`` keeps
the first row of each key (exact text match of the canonical key) and drops later *identical* ones; the
first row of each other variant (same key, other values) is passed on to raw, where staging quarantines it
as ``duplicate_key_conflict`` (visible in the quarantine, the asset metadata and the demo summary).  Counts
are in ``describe()`` and :meth:`MappedSource.table_facts`.  Rows that could not be parsed are never
deduplicated or filtered: they always reach raw (and then quarantine).

A table's ``filter`` drops rows before anything else (e.g. another country's rows); the number dropped is
counted and reported, so the raw = delivered rows invariant becomes raw = delivered - filtered.
"""

from __future__ import annotations

import glob
import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecom_pipeline.canonical import TABLES, ParseHints
from ecom_pipeline.sources.base import DEFAULT_CHUNK_ROWS, Source, SourceError
from ecom_pipeline.sources.files import (
    CsvOptions,
    ReadReport,
    default_delimiter,
    detect_format,
    finish_chunk,
    iter_file_chunks,
    require_columns,
)

TOP_KEYS = {
    "version",
    "description",
    "timezone",
    "timestamp_formats",
    "two_digit_year_start",
    "geo_bounds",
    "decimal",
    "csv",
    "tables",
}
CSV_KEYS = {"delimiter", "encoding", "header", "names", "quotechar"}
TABLE_KEYS = {"file", "format", "columns", "constants", "derive", "deduplicate", "filter", *CSV_KEYS}
DERIVE_OPS = {
    "row_number",
    "row_number_within",
    "divide",
    "json_object",
    "concat",
    "coalesce",
    "when",
    "abs",
    "guest_per_order",
}
CONDITION_TESTS = {"equals", "prefix", "regex", "empty"}
GUEST_PREFIX = "guest-"
DELIMITER_ALIASES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


@dataclass(frozen=True)
class Condition:
    """A test on one source column's text: ``equals`` / ``prefix`` (one value or a list), ``regex``
    (searched anywhere; anchor it with ^...$) or ``empty`` (no value).  An empty value matches only
    ``empty: true``."""

    column: str
    test: str
    values: tuple[str, ...] = ()
    pattern: re.Pattern | None = None

    def matches(self, value: str | None) -> bool:
        if self.test == "empty":
            return value is None
        if value is None:
            return False
        if self.test == "equals":
            return value in self.values
        if self.test == "prefix":
            return value.startswith(self.values)
        return self.pattern.search(value) is not None

    def mask(self, column: pd.Series) -> np.ndarray:
        return np.fromiter((self.matches(v) for v in column), dtype=bool, count=len(column))


@dataclass
class RowFilter:
    keep: list[Condition]  # a row is kept when it matches any of these (all rows when empty)
    drop: list[Condition]  # ... and none of these

    @property
    def source_columns(self) -> list[str]:
        return [c.column for c in self.keep + self.drop]

    def keep_mask(self, chunk: pd.DataFrame) -> np.ndarray:
        n = len(chunk)
        keep = np.zeros(n, dtype=bool) if self.keep else np.ones(n, dtype=bool)
        for cond in self.keep:
            keep |= cond.mask(chunk[cond.column])
        for cond in self.drop:
            keep &= ~cond.mask(chunk[cond.column])
        return keep


@dataclass
class TableMapping:
    table: str
    file: str  # as written in the mapping
    paths: list[Path]  # resolved (a glob may match several files)
    labels: list[str]  # _source_file value of each path
    fmt: str
    csv: CsvOptions | None
    columns: dict[str, str]  # canonical -> source column
    constants: dict[str, str]
    derive: dict[str, dict]  # canonical -> {op: argument, ...}
    deduplicate: bool = False
    row_filter: RowFilter | None = None

    @property
    def source_columns(self) -> list[str]:
        cols = list(self.columns.values())
        for spec in self.derive.values():
            cols.extend(spec.get("_sources", []))
        if self.row_filter is not None:
            cols.extend(self.row_filter.source_columns)
        return list(dict.fromkeys(cols))

    @property
    def output_columns(self) -> list[str]:
        """Canonical columns this table fills, in the canonical order."""
        filled = set(self.columns) | set(self.constants) | set(self.derive)
        return [c for c in TABLES[self.table].column_names if c in filled]


@dataclass
class _Stats:
    duplicates_dropped: Counter = field(default_factory=Counter)
    conflicting_duplicates: Counter = field(default_factory=Counter)
    not_a_number: Counter = field(default_factory=Counter)
    conflict_variants: Counter = field(default_factory=Counter)
    filtered_out: Counter = field(default_factory=Counter)
    guests: Counter = field(default_factory=Counter)


class MappingError(SourceError):
    """A mapping file that is not valid; the message names the mapping file and the key."""


class MappedSource(Source):
    name = "mapped"

    def __init__(
        self, mapping: dict, *, mapping_path: Path | str | None = None, data_dir: Path | str | None = None
    ):
        self.mapping_path = Path(mapping_path) if mapping_path else None
        self.data_dir = Path(data_dir) if data_dir else None
        self._where = str(self.mapping_path) if self.mapping_path else "<mapping>"
        self.tables_: dict[str, TableMapping] = {}
        self.hints = ParseHints()
        self.reports: dict[str, list[ReadReport]] = {}
        self.stats = _Stats()
        self._parse(mapping)

    @classmethod
    def from_yaml(cls, mapping_path: Path | str, data_dir: Path | str | None = None) -> MappedSource:
        import yaml

        mapping_path = Path(mapping_path)
        if not mapping_path.is_file():
            raise MappingError("mapping file not found", file=str(mapping_path))
        try:
            mapping = yaml.safe_load(mapping_path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise MappingError(f"mapping file is not valid YAML: {exc}", file=str(mapping_path)) from None
        except UnicodeDecodeError:
            raise MappingError("mapping file is not UTF-8 text", file=str(mapping_path)) from None
        return cls(mapping, mapping_path=mapping_path, data_dir=data_dir)

    @classmethod
    def for_delivery(cls, mapping_path: Path | str, data_dir: Path | str) -> MappedSource:
        """The mapping restricted to the tables whose files are in ``data_dir`` (one day's delivery for the
        partitioned ingest: a day usually brings orders and events, not sellers).  Files are looked for in
        ``data_dir`` only; SourceError when none of the mapping's files is there."""
        import yaml

        mapping_path, data_dir = Path(mapping_path), Path(data_dir)
        if not mapping_path.is_file():
            raise MappingError("mapping file not found", file=str(mapping_path))
        doc = yaml.safe_load(mapping_path.read_text(encoding="utf-8")) or {}
        tables = doc.get("tables") if isinstance(doc, dict) else None
        tables = tables if isinstance(tables, dict) else {}
        present = {}
        for table, spec in tables.items():
            pattern = str((spec or {}).get("file", ""))
            if pattern and (glob.glob(str(data_dir / pattern)) or (data_dir / pattern).is_file()):
                present[table] = spec
        if not present:
            raise SourceError(
                f"none of the files of {mapping_path} is in this delivery "
                f"(looked for {sorted(str((s or {}).get('file')) for s in tables.values())})",
                file=str(data_dir),
            )
        return cls({**doc, "tables": present}, data_dir=data_dir)

    @classmethod
    def hints_from_yaml(cls, mapping_path: Path | str) -> ParseHints:
        """The mapping's parse hints (time zone, formats, decimal) without looking for its data files (the
        partitioned rebuild re-stages raw rows that are already loaded)."""
        import yaml

        mapping_path = Path(mapping_path)
        doc = yaml.safe_load(mapping_path.read_text(encoding="utf-8")) or {}
        reader = cls.__new__(cls)
        reader._where = str(mapping_path)
        return reader._parse_hints(doc if isinstance(doc, dict) else {})

    # ------------------------------------------------------------------ validation
    def _err(self, key: str, message: str, column: str | None = None) -> MappingError:
        return MappingError(f"{self._where}: {key}: {message}", file=self._where, column=column)

    def _parse(self, m: Any) -> None:
        if not isinstance(m, dict):
            raise self._err("(top level)", "the mapping must be a YAML mapping with a 'tables' key")
        # "x-..." keys are free: a place for YAML anchors that tables reuse (like docker compose)
        unknown = sorted(k for k in set(m) - TOP_KEYS if not str(k).startswith("x-"))
        if unknown:
            raise self._err(unknown[0], f"unknown key; allowed: {sorted(TOP_KEYS)}")
        if m.get("version", 1) != 1:
            raise self._err(
                "version", f"unsupported version {m.get('version')!r}; this reader knows version 1"
            )
        self.hints = self._parse_hints(m)
        defaults = m.get("csv") or {}
        if not isinstance(defaults, dict):
            raise self._err("csv", "must be a mapping of CSV options")
        bad = sorted(set(defaults) - CSV_KEYS)
        if bad:
            raise self._err(f"csv.{bad[0]}", f"unknown CSV option; allowed: {sorted(CSV_KEYS)}")
        tables = m.get("tables")
        if not isinstance(tables, dict) or not tables:
            raise self._err("tables", "needs at least one canonical table, e.g. tables: {orders: {...}}")
        for table, spec in tables.items():
            self.tables_[table] = self._parse_table(str(table), spec, defaults)

    def _parse_hints(self, m: dict) -> ParseHints:
        # Default: ISO, plus fractional seconds (Parquet timestamps with a sub-second part).
        kw: dict[str, Any] = {"timestamp_formats": (*ParseHints().timestamp_formats, "%Y-%m-%d %H:%M:%S.%f")}
        if "timezone" in m:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            tz = m["timezone"]
            try:
                ZoneInfo(str(tz))
            except (ZoneInfoNotFoundError, ValueError):
                raise self._err(
                    "timezone",
                    f"unknown time zone {tz!r} (use an IANA name such as 'America/New_York' or 'UTC')",
                ) from None
            kw["timezone"] = str(tz)
        if "timestamp_formats" in m:
            fmts = m["timestamp_formats"]
            if isinstance(fmts, str):
                fmts = [fmts]
            if (
                not isinstance(fmts, list)
                or not fmts
                or not all(isinstance(f, str) and "%" in f for f in fmts)
            ):
                raise self._err("timestamp_formats", "must be a list of strptime formats such as '%m/%d/%Y'")
            kw["timestamp_formats"] = tuple(fmts)
        if "two_digit_year_start" in m:
            start = m["two_digit_year_start"]
            if not isinstance(start, int) or isinstance(start, bool) or not 1800 <= start <= 2100:
                raise self._err(
                    "two_digit_year_start",
                    f"must be a year such as 1970 (then '69' is 2069 and '70' is 1970), not {start!r}",
                )
            kw["two_digit_year_start"] = start
        if "geo_bounds" in m:
            if m["geo_bounds"] not in ("world", "brazil"):
                raise self._err("geo_bounds", f"must be world or brazil, not {m['geo_bounds']!r}")
            kw["geo_bounds"] = m["geo_bounds"]
        if "decimal" in m:
            if m["decimal"] not in (".", ","):
                raise self._err("decimal", f"must be '.' or ',', not {m['decimal']!r}")
            kw["decimal"] = m["decimal"]
        return ParseHints(**kw)

    def _parse_table(self, table: str, spec: Any, defaults: dict) -> TableMapping:
        key = f"tables.{table}"
        if table not in TABLES:
            raise self._err(key, f"unknown canonical table {table!r}; known: {sorted(TABLES)}")
        if not isinstance(spec, dict):
            raise self._err(key, "must be a mapping with at least 'file' and 'columns'")
        unknown = sorted(set(spec) - TABLE_KEYS)
        if unknown:
            raise self._err(f"{key}.{unknown[0]}", f"unknown key; allowed: {sorted(TABLE_KEYS)}")
        tspec = TABLES[table]
        known_cols = tspec.column_names

        def canonical(section: str, name: Any) -> str:
            name = str(name)
            if name not in known_cols:
                raise self._err(
                    f"{key}.{section}.{name}",
                    f"unknown canonical column of {table}; known: {known_cols}",
                    column=name,
                )
            return name

        # columns
        cols_raw = spec.get("columns") or {}
        if not isinstance(cols_raw, dict):
            raise self._err(f"{key}.columns", "must map canonical column -> source column")
        columns: dict[str, str] = {}
        for cname, src in cols_raw.items():
            c = canonical("columns", cname)
            if src is None or isinstance(src, (dict, list, bool)):
                raise self._err(f"{key}.columns.{c}", f"must be the name of a source column, not {src!r}")
            columns[c] = str(src)
        # constants
        consts_raw = spec.get("constants") or {}
        if not isinstance(consts_raw, dict):
            raise self._err(f"{key}.constants", "must map canonical column -> value")
        constants: dict[str, str] = {}
        for cname, value in consts_raw.items():
            c = canonical("constants", cname)
            if value is None or isinstance(value, (dict, list)):
                raise self._err(f"{key}.constants.{c}", f"must be a single value, not {value!r}")
            constants[c] = str(value).lower() if isinstance(value, bool) else str(value)
        # derive
        derive_raw = spec.get("derive") or {}
        if not isinstance(derive_raw, dict):
            raise self._err(f"{key}.derive", "must map canonical column -> derivation")
        derive: dict[str, dict] = {}
        for cname, d in derive_raw.items():
            c = canonical("derive", cname)
            derive[c] = self._parse_derive(f"{key}.derive.{c}", d)
        # each canonical column filled once
        seen: dict[str, str] = {}
        for section, names in (("columns", columns), ("constants", constants), ("derive", derive)):
            for c in names:
                if c in seen:
                    raise self._err(
                        f"{key}.{section}.{c}", f"{c} is already filled under {key}.{seen[c]}", column=c
                    )
                seen[c] = section
        for c, d in derive.items():
            within = d.get("row_number_within")
            for ref in within or ():
                if ref not in seen or ref in derive:
                    raise self._err(
                        f"{key}.derive.{c}.row_number_within",
                        f"{ref!r} must be a canonical column of {table} filled under columns or constants",
                        column=ref,
                    )
        # key and required columns
        for col in tspec.columns:
            if (col.required or col.name in tspec.key) and col.name not in seen:
                raise self._err(
                    key,
                    f"canonical column {col.name!r} is required (key or NOT NULL) but not "
                    "filled; map it under columns, constants or derive",
                    column=col.name,
                )
        dedup = spec.get("deduplicate", False)
        if not isinstance(dedup, bool):
            raise self._err(f"{key}.deduplicate", f"must be true or false, not {dedup!r}")
        row_filter = self._parse_filter(f"{key}.filter", spec["filter"]) if "filter" in spec else None

        # the file(s)
        file_ = spec.get("file")
        if not isinstance(file_, str) or not file_.strip():
            raise self._err(
                f"{key}.file",
                "needs the path of the data file (relative to the data folder or "
                "to the mapping file's folder)",
            )
        paths, labels = self._resolve(file_, f"{key}.file")
        try:
            fmt = detect_format(paths[0], spec.get("format"))
        except SourceError as exc:
            raise self._err(f"{key}.format", str(exc)) from None
        csv_given = {k: spec[k] for k in CSV_KEYS if k in spec}
        if fmt == "parquet":
            if csv_given:
                raise self._err(f"{key}.{min(csv_given)}", "CSV options do not apply to a Parquet file")
            options = None
        else:
            opts = {**defaults, **csv_given}
            options = self._csv_options(key, opts, paths[0])
        tm = TableMapping(
            table, file_, paths, labels, fmt, options, columns, constants, derive, dedup, row_filter
        )
        # every mapped source column must be in every file
        for path, label in zip(paths, labels):
            try:
                require_columns(path, tm.source_columns, fmt, options, label)
            except SourceError as exc:
                message = str(exc).split(" | file: ")[0]
                raise SourceError(
                    f"{self._where}: {key}: {message}", file=str(path), column=exc.column
                ) from None
        return tm

    def _parse_condition(self, key: str, c: Any) -> Condition:
        example = "{column: Country, equals: United Kingdom}"
        if not isinstance(c, dict) or "column" not in c:
            raise self._err(key, f"a condition names a source column and one test, e.g. {example}")
        tests = sorted(set(c) - {"column", "then"})
        if len(tests) != 1 or tests[0] not in CONDITION_TESTS:
            raise self._err(
                key, f"needs exactly one of {sorted(CONDITION_TESTS)} besides column, e.g. {example}"
            )
        test, arg = tests[0], c[tests[0]]
        column = str(c["column"])
        if test == "empty":
            if arg is not True:
                raise self._err(f"{key}.empty", "write empty: true")
            return Condition(column, test)
        if test == "regex":
            try:
                return Condition(column, test, pattern=re.compile(str(arg)))
            except re.error as exc:
                raise self._err(f"{key}.regex", f"not a valid regular expression: {exc}") from None
        values = arg if isinstance(arg, list) else [arg]
        if not values or any(v is None or isinstance(v, (dict, list)) for v in values):
            raise self._err(f"{key}.{test}", "must be a value or a list of values")
        return Condition(
            column, test, values=tuple(str(v).lower() if isinstance(v, bool) else str(v) for v in values)
        )

    def _parse_filter(self, key: str, f: Any) -> RowFilter:
        if not isinstance(f, dict) or not f or set(f) - {"keep", "drop"}:
            raise self._err(key, "write filter: {keep: <condition or list>, drop: <condition or list>}")
        parts: dict[str, list[Condition]] = {}
        for part in ("keep", "drop"):
            raw = f.get(part) or []
            raw = raw if isinstance(raw, list) else [raw]
            parts[part] = [self._parse_condition(f"{key}.{part}[{i}]", c) for i, c in enumerate(raw)]
        return RowFilter(parts["keep"], parts["drop"])

    def _parse_derive(self, key: str, d: Any) -> dict:
        if not isinstance(d, dict) or not d:
            raise self._err(key, f"must be one of {sorted(DERIVE_OPS)}, e.g. {{row_number_within: order_id}}")
        ops = sorted(set(d) & DERIVE_OPS)
        extra = sorted(set(d) - DERIVE_OPS - ({"else"} if ops == ["when"] else set()))
        if extra:
            raise self._err(
                f"{key}.{extra[0]}",
                f"unknown derivation; known: {sorted(DERIVE_OPS)} (only when takes a second key, else)",
            )
        if len(ops) != 1:
            raise self._err(key, f"one derivation per column, not {ops}")
        op = ops[0]
        arg = d[op]
        if op == "row_number":
            if arg is not True:
                raise self._err(f"{key}.{op}", "write row_number: true")
            return {op: True}
        if op == "row_number_within":
            refs = [arg] if isinstance(arg, str) else arg
            if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
                raise self._err(
                    f"{key}.{op}", "names the canonical column(s) to number within, e.g. order_id"
                )
            return {op: list(refs)}
        if op == "concat":
            if isinstance(arg, dict):
                cols, sep = arg.get("columns"), arg.get("sep", "-")
            else:
                cols, sep = arg, "-"
            if not isinstance(cols, list) or len(cols) < 2 or not isinstance(sep, str):
                raise self._err(
                    f"{key}.{op}", "write concat: [Col A, Col B] or concat: {columns: [...], sep: '|'}"
                )
            cols = [str(c) for c in cols]
            return {op: cols, "sep": sep, "_sources": cols}
        if op == "divide":
            if not isinstance(arg, list) or len(arg) != 2:
                raise self._err(f"{key}.{op}", "write divide: [numerator column, denominator column]")
            cols = [str(c) for c in arg]
            return {op: cols, "_sources": cols}
        if op == "coalesce":
            default = None
            if isinstance(arg, dict):
                cols, default = arg.get("columns"), arg.get("default")
                if default is not None and isinstance(default, (dict, list)):
                    raise self._err(f"{key}.{op}.default", "must be a single value")
            else:
                cols = arg
            if not isinstance(cols, list) or not cols:
                raise self._err(
                    f"{key}.{op}",
                    "write coalesce: [Col A, Col B] or coalesce: {columns: [...], default: unknown}",
                )
            cols = [str(c) for c in cols]
            return {op: cols, "default": None if default is None else str(default), "_sources": cols}
        if op == "abs":
            if not isinstance(arg, str):
                raise self._err(f"{key}.{op}", "names one source column, e.g. abs: Quantity")
            return {op: arg, "_sources": [arg]}
        if op == "guest_per_order":
            if (
                not isinstance(arg, dict)
                or not {"column", "order"} <= set(arg)
                or set(arg) - {"column", "order", "guest_values"}
            ):
                raise self._err(
                    f"{key}.{op}",
                    "write guest_per_order: {column: CustomerID, order: InvoiceNo, guest_values: ['0']}",
                )
            guests = arg.get("guest_values") or []
            guests = guests if isinstance(guests, list) else [guests]
            cols = [str(arg["column"]), str(arg["order"])]
            return {op: cols, "guest_values": frozenset(str(g) for g in guests), "_sources": cols}
        if op == "when":
            rules = arg if isinstance(arg, list) else None
            if not rules:
                raise self._err(
                    f"{key}.when",
                    "write when: [{column: STATUS, equals: Cancelled, then: canceled}, "
                    "...] (first matching rule wins), optionally else: <value>",
                )
            parsed = []
            for i, rule in enumerate(rules):
                if not isinstance(rule, dict) or "then" not in rule or isinstance(rule["then"], (dict, list)):
                    raise self._err(f"{key}.when[{i}]", "each rule needs then: <value>")
                then = rule["then"]
                parsed.append(
                    (self._parse_condition(f"{key}.when[{i}]", rule), None if then is None else str(then))
                )
            otherwise = d.get("else")
            else_column = None
            if isinstance(otherwise, dict):
                if set(otherwise) != {"column"}:
                    raise self._err(f"{key}.else", "a value, or {column: Source Column}")
                else_column, otherwise = str(otherwise["column"]), None
            elif isinstance(otherwise, list):
                raise self._err(f"{key}.else", "a value, or {column: Source Column}")
            sources = [c.column for c, _ in parsed] + ([else_column] if else_column else [])
            return {
                op: parsed,
                "else": None if otherwise is None else str(otherwise),
                "else_column": else_column,
                "_sources": list(dict.fromkeys(sources)),
            }
        # json_object
        if not isinstance(arg, list) or not arg:
            raise self._err(f"{key}.{op}", "write json_object: [Col A, Col B, ...]")
        cols = [str(c) for c in arg]
        return {op: cols, "_sources": cols}

    def _csv_options(self, key: str, opts: dict, path: Path) -> CsvOptions:
        delimiter = opts.get("delimiter", default_delimiter(path))
        delimiter = (
            DELIMITER_ALIASES.get(str(delimiter).lower(), delimiter)
            if isinstance(delimiter, str)
            else delimiter
        )
        header = opts.get("header", 1)
        if header is False or header is None:
            header = None
        elif header is True:
            header = 1
        elif not isinstance(header, int) or header < 1:
            raise self._err(f"{key}.header", "must be the 1-based row number of the header, or false")
        names = opts.get("names")
        if names is not None:
            if not isinstance(names, list) or not names:
                raise self._err(f"{key}.names", "must be a list of column names")
            names = tuple(str(n) for n in names)
        if header is None and not names:
            raise self._err(f"{key}.header", "a file without a header row needs names: [...]")
        try:
            return CsvOptions(
                delimiter=str(delimiter),
                encoding=str(opts.get("encoding", "utf-8")),
                header=header,
                names=names,
                quotechar=str(opts.get("quotechar", '"')),
            )
        except SourceError as exc:
            raise self._err(key, str(exc)) from None

    def _resolve(self, file_: str, key: str) -> tuple[list[Path], list[str]]:
        bases = []
        if self.data_dir is not None:
            bases.append(self.data_dir)
        if self.mapping_path is not None:
            bases.append(self.mapping_path.parent)
        if not bases:
            bases.append(Path.cwd())
        p = Path(file_).expanduser()
        tried = []
        for base in [Path("/")] if p.is_absolute() else bases:
            full = p if p.is_absolute() else base / p
            tried.append(str(full))
            if full.is_file():  # a literal name first: "orders[1].csv" is a file, not a pattern
                matches = [full]
            elif glob.has_magic(str(p)):
                matches = sorted(Path(x) for x in glob.glob(str(full)) if Path(x).is_file())
            else:
                matches = []
            if matches:
                labels = []
                for mp in matches:
                    try:
                        labels.append(mp.relative_to(base).as_posix() if not p.is_absolute() else str(mp))
                    except ValueError:
                        labels.append(str(mp))
                return matches, labels
        raise SourceError(f"{self._where}: {key}: data file not found; looked in: {tried}", file=file_)

    # ------------------------------------------------------------------ interface
    def tables(self) -> set[str]:
        return set(self.tables_)

    def parse_hints(self, table: str) -> ParseHints:
        return self.hints

    def describe(self) -> dict:
        return {
            "source": self.name,
            "mapping": self._where,
            "data_dir": str(self.data_dir) if self.data_dir else None,
            "tables": {
                t: {"files": tm.labels, "format": tm.fmt, "deduplicate": tm.deduplicate}
                for t, tm in sorted(self.tables_.items())
            },
            "timezone": self.hints.timezone,
            "timestamp_formats": list(self.hints.timestamp_formats),
            "read_reports": {t: [r.as_dict() for r in rs] for t, rs in self.reports.items()},
            "duplicates_dropped": dict(self.stats.duplicates_dropped),
            "conflicting_duplicates": dict(self.stats.conflicting_duplicates),
            "conflicting_variants_passed": dict(self.stats.conflict_variants),
            "filtered_out": dict(self.stats.filtered_out),
            "guest_rows": dict(self.stats.guests),
            "derived_not_a_number": dict(self.stats.not_a_number),
        }

    def table_facts(self, table: str) -> dict:
        """Counts of the last read of ``table`` for the raw asset's metadata."""
        return {
            "rows_filtered_out": int(self.stats.filtered_out.get(table, 0)),
            "identical_duplicates_dropped": int(self.stats.duplicates_dropped.get(table, 0)),
            "conflicting_duplicate_rows": int(self.stats.conflicting_duplicates.get(table, 0)),
            "conflicting_variants_passed_to_staging": int(self.stats.conflict_variants.get(table, 0)),
            "guest_rows": int(self.stats.guests.get(table, 0)),
        }

    def fast_scan(self, table: str):
        """The DuckDB fast path for a table filled only by renamed columns and constants from UTF-8 CSV
        files (no derivations, filter or deduplication, which need the rows in Python)."""
        from ecom_pipeline.sources.fast_csv import FastFile, FastScan, csv_options_fast

        tm = self.tables_.get(table)
        if (
            tm is None
            or tm.fmt != "csv"
            or tm.derive
            or tm.deduplicate
            or tm.row_filter is not None
            or not csv_options_fast(tm.csv)
        ):
            return None
        first_col = tm.output_columns[0]

        def to_raw(chunk: pd.DataFrame) -> pd.DataFrame:
            values: dict[str, Any] = {c: chunk[src] for c, src in tm.columns.items()}
            values.update(tm.constants)
            return finish_chunk(chunk, {c: values[c] for c in tm.output_columns}, first_col)

        return FastScan(
            files=[FastFile(p, label, tm.csv) for p, label in zip(tm.paths, tm.labels)],
            columns=dict(tm.columns),
            constants=dict(tm.constants),
            source_columns=tm.source_columns,
            to_raw=to_raw,
        )

    def record_fast_reports(self, table: str, reports: list) -> None:
        """Keep the fast path's per-file read reports where ``describe()`` shows them."""
        self.reports[table] = list(reports)
        for counter in (
            self.stats.duplicates_dropped,
            self.stats.conflicting_duplicates,
            self.stats.conflict_variants,
            self.stats.filtered_out,
            self.stats.guests,
            self.stats.not_a_number,
        ):
            counter[table] = 0

    def read(self, table: str, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[pd.DataFrame]:
        self.check_table(table)
        tm = self.tables_.get(table)
        if tm is None:
            raise SourceError(f"the mapping has no {table} table", file=self._where)
        self.reports[table] = []
        for counter in (
            self.stats.duplicates_dropped,
            self.stats.conflicting_duplicates,
            self.stats.conflict_variants,
            self.stats.filtered_out,
            self.stats.guests,
            self.stats.not_a_number,
        ):
            counter[table] = 0
        key_cols = list(TABLES[table].key)
        first_col = tm.output_columns[0]
        seen: dict[tuple, int] = {}  # key -> hash of the kept row (deduplicate)
        variants: set[tuple] = set()  # (key, hash) of conflicting variants already passed on
        counters: Counter = Counter()  # row_number_within
        row_number = 0
        for path, label in zip(tm.paths, tm.labels):
            report = ReadReport(label)
            self.reports[table].append(report)
            for chunk in iter_file_chunks(
                path,
                fmt=tm.fmt,
                options=tm.csv,
                columns=tm.source_columns,
                chunk_rows=chunk_rows,
                label=label,
                report=report,
            ):
                ok = chunk["_parse_error"].isna().to_numpy()  # rows read cleanly
                if tm.row_filter is not None:
                    keep = tm.row_filter.keep_mask(chunk) | ~ok  # unparseable rows always reach quarantine
                    self.stats.filtered_out[table] += int((~keep).sum())
                    if not keep.all():
                        chunk = chunk[keep].reset_index(drop=True)
                        ok = ok[keep]
                    if not len(chunk):
                        continue
                values: dict[str, Any] = {c: chunk[src] for c, src in tm.columns.items()}
                values.update(tm.constants)
                for c, d in tm.derive.items():
                    if "row_number" in d:
                        values[c] = [str(row_number + i + 1) for i in range(len(chunk))]
                    elif "row_number_within" in d:
                        values[c] = self._number_within(
                            d["row_number_within"], values, ok, counters, len(chunk)
                        )
                    elif "divide" in d:
                        values[c] = self._divide(table, chunk, *d["divide"])
                    elif "json_object" in d:
                        cols = d["json_object"]
                        values[c] = [
                            json.dumps(dict(zip(cols, vals)), ensure_ascii=False)
                            for vals in zip(*(chunk[x] for x in cols))
                        ]
                    elif "concat" in d:
                        sep = d["sep"]
                        values[c] = [
                            None if any(v is None for v in vals) else sep.join(vals)
                            for vals in zip(*(chunk[x] for x in d["concat"]))
                        ]
                    elif "coalesce" in d:
                        values[c] = self._coalesce(chunk, d["coalesce"], d["default"])
                    elif "abs" in d:
                        values[c] = [
                            v[1:] if v is not None and v.startswith("-") else v for v in chunk[d["abs"]]
                        ]
                    elif "guest_per_order" in d:
                        values[c] = self._guest_per_order(
                            table, chunk, *d["guest_per_order"], d["guest_values"]
                        )
                    elif "when" in d:
                        values[c] = self._when(chunk, d["when"], d["else"], d["else_column"])
                row_number += len(chunk)
                out = finish_chunk(chunk, {c: values[c] for c in tm.output_columns}, first_col)
                if tm.deduplicate:
                    out = self._dedupe(table, out, key_cols, ok, seen, variants)
                if len(out):
                    yield out

    # ------------------------------------------------------------------ derivations
    @staticmethod
    def _number_within(refs: list[str], values: dict, ok: np.ndarray, counters: Counter, n: int) -> list:
        cols = []
        for r in refs:
            v = values[r]
            cols.append(list(v) if isinstance(v, pd.Series) else [v] * n)
        out: list[str | None] = []
        for i, key in enumerate(zip(*cols)):
            if not ok[i] or any(k is None for k in key):
                out.append(None)
                continue
            counters[key] += 1
            out.append(str(counters[key]))
        return out

    @staticmethod
    def _coalesce(chunk: pd.DataFrame, cols: list[str], default: str | None) -> list:
        out: list[str | None] = []
        for vals in zip(*(chunk[x] for x in cols)):
            # a blank field counts as empty too (staging would trim it to NULL anyway)
            out.append(next((v for v in vals if v is not None and v.strip()), default))
        return out

    def _guest_per_order(
        self, table: str, chunk: pd.DataFrame, customer_col: str, order_col: str, guest_values: frozenset
    ) -> list:
        """The customer id, or one synthetic guest per order (``guest-<order>``) when the id is empty or a
        guest marker; staging pseudonymises it like any customer id."""
        out: list[str | None] = []
        guests = 0
        for cust, order in zip(chunk[customer_col], chunk[order_col]):
            if cust is not None and cust.strip() and cust.strip() not in guest_values:
                out.append(cust)
            elif order is not None and order.strip():
                guests += 1
                out.append(GUEST_PREFIX + order.strip())
            else:
                out.append(None)  # no order either: staging quarantines it as missing_required
        self.stats.guests[table] += guests
        return out

    @staticmethod
    def _when(
        chunk: pd.DataFrame,
        rules: list[tuple[Condition, str | None]],
        otherwise: str | None,
        else_column: str | None,
    ) -> list:
        n = len(chunk)
        out: list[str | None] = list(chunk[else_column]) if else_column else [otherwise] * n
        decided = np.zeros(n, dtype=bool)
        for cond, then in rules:  # first matching rule wins
            hit = cond.mask(chunk[cond.column]) & ~decided
            for i in np.flatnonzero(hit):
                out[i] = then
            decided |= hit
        return out

    def _divide(self, table: str, chunk: pd.DataFrame, num_col: str, den_col: str) -> list:
        dec = self.hints.decimal
        out: list[str | None] = []
        for a, b in zip(chunk[num_col], chunk[den_col]):
            if a is None or b is None:
                out.append(None)
                continue
            try:
                x = float(a.replace(",", ".") if dec == "," else a)
                y = float(b.replace(",", ".") if dec == "," else b)
                q = x / y
                if not math.isfinite(q):
                    raise ValueError
            except (ValueError, ZeroDivisionError):
                # Keep the values visible: staging cannot parse this and quarantines the row with it.
                self.stats.not_a_number[table] += 1
                out.append(f"{a}/{b}")
                continue
            text = repr(round(q, 6))
            out.append(text.replace(".", ",") if dec == "," else text)
        return out

    def _dedupe(
        self,
        table: str,
        out: pd.DataFrame,
        key_cols: list[str],
        ok: np.ndarray,
        seen: dict[tuple, int],
        variants: set[tuple],
    ) -> pd.DataFrame:
        value_cols = [c for c in out.columns if c not in ("_source_file", "_source_row", "_parse_error")]
        keep = np.ones(len(out), dtype=bool)
        keys = zip(*(out[k] for k in key_cols))
        rows = zip(*(out[c] for c in value_cols))
        for i, (key, row) in enumerate(zip(keys, rows)):
            if not ok[i] or any(k is None for k in key):
                continue  # unparseable or keyless rows always go through (to quarantine)
            h = hash(row)
            prev = seen.get(key)
            if prev is None:
                seen[key] = h
            elif prev == h:
                keep[i] = False
                self.stats.duplicates_dropped[table] += 1
            else:
                # Disagrees with the kept row.  The first row of each other variant goes on to raw, where
                # staging quarantines it as duplicate_key_conflict; its repeats are counted, not copied.
                self.stats.conflicting_duplicates[table] += 1
                if (key, h) in variants:
                    keep[i] = False
                else:
                    variants.add((key, h))
                    self.stats.conflict_variants[table] += 1
        return out[keep].reset_index(drop=True)
