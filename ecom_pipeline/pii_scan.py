"""Find personal data where it must not be: every column of every warehouse table, and files on disk.

Two kinds of search, both case-insensitive:

* **seeded values**: exact strings known to be personal data (names, e-mails, phones, CPF numbers, raw
  customer ids), each expanded into the formats it may be written in (:func:`seeded_needles`: a phone as
  ``+55 11 91234-5678``, ``(11) 91234-5678``, ``11912345678``...; a CPF with and without punctuation).
  A value found inside a longer text counts (a CPF typed into a review).
* **generic patterns** (:data:`PATTERNS`): anything shaped like an e-mail, a CPF or a Brazilian phone
  number, whoever it belongs to.  Placeholders written by the masker (``[EMAIL]``, ``[CPF]``...) do not
  match.

:func:`scan_warehouse` walks ``information_schema``: every table of every schema (``exclude_schemas``
aside), every column except plain numbers, dates and booleans (text, integer, list, struct and map
columns are cast to text, so a CPF stored as a BIGINT or an e-mail inside a STRUCT is found too).
:func:`scan_files` searches files (MLflow artifacts, reports): every file's bytes for the seeded values
(a pickle or a PNG text chunk can carry a string), and the patterns in text-like files only.  Compressed
content (Parquet pages, gzip, PNG pixel data) is not decompressed.

Findings carry a masked example (:func:`mask_example`) so a scan report never repeats the value it found.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb

from ecom_pipeline.loading import quote_ident

# Written independently of cleaning.privacy.MASK_RULES on purpose: a scan that reused the masker's patterns
# could not catch the masker's own blind spots.  RE2 (DuckDB) and Python ``re`` read them identically.
PATTERNS: dict[str, str] = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    "cpf": r"\b[0-9]{3}\.[0-9]{3}\.[0-9]{3}-[0-9]{2}\b|\b[0-9]{9}-[0-9]{2}\b",
    "br_phone": (
        r"\+55[ .-]?\(?[0-9]{2}\)?[ .-]?9?[0-9]{4}[ .-]?[0-9]{4}\b"
        r"|\([0-9]{2}\)[ .-]?9?[0-9]{4}[ .-]?[0-9]{4}\b"
        r"|\b[0-9]{2}[ .-]9[0-9]{4}-[0-9]{4}\b"
        r"|\b[1-9]{2}9[0-9]{8}\b"
    ),
}
_COMPILED = {kind: re.compile(p, re.ASCII) for kind, p in PATTERNS.items()}

# Column types that cannot hold a string, so cannot hold personal data (dates, floats, booleans...).
_SKIP_TYPES = re.compile(
    r"^(BOOLEAN|FLOAT|DOUBLE|REAL|DECIMAL.*|DATE|TIME.*|TIMESTAMP.*|INTERVAL|UUID)$", re.IGNORECASE
)
# Files whose content is text: searched for the patterns as well as the seeded values.
TEXT_SUFFIXES = {
    ".txt",
    ".csv",
    ".tsv",
    ".json",
    ".jsonl",
    ".md",
    ".yaml",
    ".yml",
    ".html",
    ".log",
    ".py",
    ".sql",
    ".xml",
    "",
}
MAX_FILE_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class Finding:
    """``where``: ``schema.table.column`` or a file path; ``kind``: ``seeded:<label>`` or
    ``pattern:<name>``."""

    where: str
    kind: str
    count: int
    example: str  # masked

    def as_dict(self) -> dict:
        return asdict(self)


def mask_example(value: str, keep: int = 2) -> str:
    """``joao.silva@x.com`` -> ``jo************om``: enough to recognise a format, not the person."""
    value = str(value)
    if len(value) <= 2 * keep + 1:
        return "*" * len(value)
    return value[:keep] + "*" * (len(value) - 2 * keep) + value[-keep:]


# ---------------------------------------------------------------------------------------------- needles
def _digits(s: str) -> str:
    return re.sub(r"[^0-9]", "", s)


def phone_variants(phone: str) -> set[str]:
    """The ways one phone number is written: as delivered and as bare digits (any country, e.g.
    "+33 1 46 62 7555" / "33146627555", "(171) 555-2282" / "1715552282"); a Brazilian number also with
    or without +55 and the DDD in parentheses."""
    d = _digits(phone)
    out = {phone.strip()}
    if len(d) >= 7:  # shorter digit runs would match ordinary numbers (prices, ids)
        out.add(d)
    brazilian = (
        phone.strip().startswith("+55") or (d.startswith("55") and len(d) in (12, 13)) or len(d) in (10, 11)
    )
    if d.startswith("55") and len(d) in (12, 13):
        d = d[2:]
    if brazilian and len(d) in (10, 11):
        ddd, num = d[:2], d[2:]
        head, tail = num[:-4], num[-4:]
        out |= {
            f"+55 {ddd} {head}-{tail}",
            f"+55{d}",
            f"55{d}",
            f"({ddd}) {head}-{tail}",
            f"({ddd}){head}-{tail}",
            f"{ddd} {head}-{tail}",
            f"{ddd}{head}-{tail}",
            d,
        }
    return out


def cpf_variants(cpf: str) -> set[str]:
    d = _digits(cpf)
    if len(d) != 11:
        return {cpf.strip()}
    return {f"{d[:3]}.{d[3:6]}.{d[6:9]}-{d[9:]}", f"{d[:9]}-{d[9:]}", d}


def address_variants(address: str) -> set[str]:
    """A street address as delivered and with its runs of spaces collapsed ("59 rue de l'Abbaye")."""
    return {address.strip(), " ".join(address.split())}


def seeded_needles(
    *,
    names: Iterable[str] = (),
    emails: Iterable[str] = (),
    phones: Iterable[str] = (),
    cpfs: Iterable[str] = (),
    ids: Iterable[str] = (),
    addresses: Iterable[str] = (),
    min_length: int = 6,
) -> dict[str, str]:
    """``{lower-cased needle: label}`` for every format of every seeded value.

    Needles shorter than ``min_length`` are dropped: a 3-letter name would match ordinary words."""
    out: dict[str, str] = {}

    def add(values: Iterable[str], label: str, expand=lambda v: {v}):
        for v in values:
            if v is None or not str(v).strip():
                continue
            for variant in expand(str(v).strip()):
                if len(variant) >= min_length:
                    out.setdefault(variant.lower(), label)

    add(names, "name")
    add(emails, "email")
    add(phones, "phone", phone_variants)
    add(cpfs, "cpf", cpf_variants)
    add(ids, "customer_id")
    add(addresses, "address", address_variants)
    return out


# ---------------------------------------------------------------------------------------------- warehouse
def scannable_columns(
    con: duckdb.DuckDBPyConnection, exclude_schemas: Iterable[str] = ()
) -> list[tuple[str, str, str]]:
    """``(schema, table, column)`` of every column that can hold text, in every base table and view."""
    rows = con.execute(
        "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_catalog = current_database() ORDER BY 1, 2, ordinal_position"
    ).fetchall()
    skip = {s.lower() for s in exclude_schemas} | {"information_schema", "pg_catalog"}
    return [(s, t, c) for s, t, c, dtype in rows if s.lower() not in skip and not _SKIP_TYPES.match(dtype)]


def scan_warehouse(
    con: duckdb.DuckDBPyConnection,
    needles: Mapping[str, str],
    *,
    patterns: bool = True,
    exclude_schemas: Iterable[str] = (),
) -> tuple[list[Finding], list[str]]:
    """Search every scannable column for ``needles`` (see :func:`seeded_needles`) and :data:`PATTERNS`.

    Returns ``(findings, scanned)`` where ``scanned`` lists every ``schema.table.column`` searched (so a
    caller can assert the scan covered what it should).  Works on a read-only connection: the needles
    are a registered in-memory relation, nothing is written."""
    import pandas as pd

    findings: list[Finding] = []
    scanned: list[str] = []
    needle_frame = pd.DataFrame({"needle": list(needles), "label": list(needles.values())})
    con.register("_pii_needles", needle_frame)
    try:
        for schema, table, column in scannable_columns(con, exclude_schemas):
            where = f"{schema}.{table}.{column}"
            scanned.append(where)
            # distinct values first: ids repeat across many rows, each is searched once
            values = (
                f"(SELECT v, count(*) AS n FROM (SELECT lower(CAST({quote_ident(column)} AS VARCHAR)) AS v "
                f"FROM {quote_ident(schema)}.{quote_ident(table)}) WHERE v IS NOT NULL GROUP BY v)"
            )
            if len(needle_frame):
                rows = con.execute(
                    f"SELECT k.label, sum(d.n)::BIGINT, min(k.needle) FROM {values} d "
                    f"JOIN _pii_needles k ON contains(d.v, k.needle) GROUP BY k.label ORDER BY 1"
                ).fetchall()
                findings += [
                    Finding(where, f"seeded:{label}", int(n), mask_example(ex)) for label, n, ex in rows
                ]
            if patterns:
                for kind, pattern in PATTERNS.items():
                    p = "'" + pattern.replace("'", "''") + "'"
                    n, ex = con.execute(
                        f"SELECT sum(d.n)::BIGINT, min(regexp_extract(d.v, {p})) FROM {values} d "
                        f"WHERE regexp_matches(d.v, {p})"
                    ).fetchall()[0]
                    if n:
                        findings.append(Finding(where, f"pattern:{kind}", int(n), mask_example(ex)))
    finally:
        con.unregister("_pii_needles")
    return findings, scanned


# ---------------------------------------------------------------------------------------------- files
def scan_files(
    roots: Iterable[Path], needles: Mapping[str, str], *, patterns: bool = True, exclude: Iterable[Path] = ()
) -> tuple[list[Finding], list[str]]:
    """Search every file under ``roots`` (files or folders): bytes for the needles, text files for patterns.

    ``exclude``: files or folders not to read (the warehouse file itself, which holds ``raw``)."""
    skip = [Path(p).resolve() for p in exclude]
    encoded = [(n.encode("utf-8"), label) for n, label in needles.items()]
    findings: list[Finding] = []
    scanned: list[str] = []
    for root in roots:
        root = Path(root)
        files = (
            [root]
            if root.is_file()
            else sorted(p for p in root.rglob("*") if p.is_file())
            if root.exists()
            else []
        )
        for path in files:
            rp = path.resolve()
            if any(rp == s or s in rp.parents for s in skip) or path.stat().st_size > MAX_FILE_BYTES:
                continue
            scanned.append(str(path))
            data = path.read_bytes().lower()
            per_label: dict[str, list] = {}
            for needle, label in encoded:
                n = data.count(needle)
                if n:
                    hit = per_label.setdefault(label, [0, needle.decode()])
                    hit[0] += n
            findings += [
                Finding(str(path), f"seeded:{label}", n, mask_example(ex))
                for label, (n, ex) in sorted(per_label.items())
            ]
            if patterns and path.suffix.lower() in TEXT_SUFFIXES:
                text = data.decode("utf-8", errors="replace")
                for kind, rx in _COMPILED.items():
                    found = [m.group(0) for m in rx.finditer(text)]
                    if found:
                        findings.append(
                            Finding(str(path), f"pattern:{kind}", len(found), mask_example(found[0]))
                        )
    return findings, scanned


def summarise(findings: Iterable[Finding]) -> dict[str, int]:
    """Total hits per schema (``schema`` = first part of ``where`` for warehouse findings)."""
    out: dict[str, int] = {}
    for f in findings:
        key = f.where.split(".", 1)[0] if "/" not in f.where else "files"
        out[key] = out.get(key, 0) + f.count
    return out
