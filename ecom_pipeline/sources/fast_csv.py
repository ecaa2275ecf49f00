"""DuckDB fast path for clean delivered CSV files, with the exact Python reader for the lines DuckDB rejects.

The shared reader (:mod:`.files`) parses CSV in Python (about 220k rows/s).  For a file whose options DuckDB
can express the same way (UTF-8, header on line 1, one-character delimiter and quote), the raw loader asks
DuckDB's ``read_csv`` to insert the rows straight into the raw table (every column ``VARCHAR``, strict
mode, ``store_rejects``), then reconciles the result with what the Python reader would have produced:

* row numbers: DuckDB's k-th accepted record is the Python reader's k-th record unless records were
  rejected; rejected records (their numbers come from the rejects table) shift the rows after them;
* rejected single lines whose failure does not change where records end (wrong number of fields, bytes
  that are not UTF-8) are cut out of the file and read by the Python reader, one line per record, so they
  reach raw exactly as the Python reader gives them (``wrong_field_count`` / ``invalid_utf8``);
* anything else (an unterminated quote, a line too long, a repeated header, blank lines together with
  rejects, mixed line ends, a DuckDB error of any kind) makes the whole file go through the Python
  reader instead: :class:`FastFallback` says why.  Nothing is read twice into raw: the file's rows are
  deleted before the fallback.

So raw is identical either way (the tests compare table fingerprints over the bad-input corpus), and so
are staging and its quarantine counts.
"""

from __future__ import annotations

import gzip
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from ecom_pipeline.sources.base import SourceError
from ecom_pipeline.sources.files import (
    _GZIP_MAGIC,
    CsvOptions,
    ReadReport,
    _check_columns,
    _CsvFile,
    iter_file_chunks,
)
from ecom_pipeline.warehouse.tables import quote_ident

# DuckDB reject kinds that concern one line and leave record boundaries where the Python reader sees them.
LINE_LOCAL_REJECTS = frozenset({"MISSING COLUMNS", "TOO MANY COLUMNS", "INVALID ENCODING"})
# DuckDB's read_csv defaults: lines up to 2 MiB, and a 32 MiB buffer (16 lines' worth) per scanning thread.
DEFAULT_MAX_LINE_BYTES = 2 * 1024 * 1024
DEFAULT_CSV_BUFFER_BYTES = 16 * DEFAULT_MAX_LINE_BYTES
MIN_CSV_BUFFER_BYTES = 64 * 1024
# What one scanning thread needs of DuckDB's memory_limit: its buffer plus the row groups the order-preserving
# insert holds (measured: a 96 MB file failed with 2 threads under 16 MB and read with one).
MIN_SCAN_BYTES_PER_THREAD = 16 * 1024 * 1024
_SIZE_UNITS = {
    "bytes": 1,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
    "PiB": 2**50,
    "EiB": 2**60,
    # decimal units, in case a DuckDB version displays them
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
}


class FastFallback(Exception):
    """The file must be read by the Python reader (the message says why)."""


@dataclass(frozen=True)
class FastFile:
    path: Path
    label: str
    options: CsvOptions


@dataclass
class FastScan:
    """How a source's table maps onto plain file columns, for the fast path.

    ``columns``: canonical column -> source column; ``constants``: canonical column -> text;
    ``to_raw``: the source's own conversion of a Python-reader chunk into a raw chunk (used for the
    lines DuckDB rejects, and for whole files that fall back), so both paths share one mapping."""

    files: list[FastFile]
    columns: dict[str, str]
    constants: dict[str, str]
    source_columns: list[str]
    to_raw: Callable[[pd.DataFrame], pd.DataFrame]


@dataclass
class FastFileResult:
    label: str
    rows: int = 0
    fast_rows: int = 0
    python_rows: int = 0  # rejected lines read by the Python reader
    report: ReadReport = field(default_factory=lambda: ReadReport(""))


def csv_options_fast(options: CsvOptions | None) -> bool:
    """Whether DuckDB can read a file written with ``options`` exactly as the Python reader does."""
    if options is None:
        return False
    import codecs

    return (
        codecs.lookup(options.encoding).name in ("utf-8", "utf-8-sig")
        and options.header == 1
        and not options.names
        and options.delimiter not in "\r\n"
        and options.quotechar != options.delimiter
    )


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _is_gzip(path: Path) -> bool:
    """By content, as the Python reader decides (a gzip stream named .csv is still gzip)."""
    with open(path, "rb") as fh:
        return fh.read(2) == _GZIP_MAGIC


def _setting_bytes(text: str) -> int:
    """DuckDB's display of a size setting (``current_setting('memory_limit')``: '15.2 MiB') in bytes; a form
    this does not know counts as unlimited (DuckDB's own buffer defaults then apply, as before)."""
    try:
        number, unit = text.split()
        return int(float(number) * _SIZE_UNITS[unit])
    except (ValueError, KeyError):
        return 2**62


@dataclass(frozen=True)
class CsvScanSettings:
    threads: int  # DuckDB threads while the file is read (the connection's, or fewer under a small limit)
    buffer_size: int
    max_line_size: int


def csv_scan_settings(memory_limit_bytes: int, threads: int) -> CsvScanSettings:
    """How read_csv may use a connection with this ``memory_limit`` and thread count.

    DuckDB 1.5 allocates each scanning thread's CSV buffer (32 MiB by default) inside the buffer pool, so
    under a small limit the default buffer cannot be allocated at all ("could not allocate block of size
    30.5 MiB") and every file fell back to the slower Python reader, whose memory is a chunk of Python
    objects.  Each scanning thread also keeps row groups in flight for the order-preserving insert, so a
    thread is given ``MIN_SCAN_BYTES_PER_THREAD`` of the limit, and the buffers of all threads an eighth of
    it.  A line longer than the buffer is a rejected line (a whole-file fallback), as a line over DuckDB's
    default maximum already was."""
    scan_threads = max(1, min(threads, memory_limit_bytes // MIN_SCAN_BYTES_PER_THREAD))
    buffer = max(
        MIN_CSV_BUFFER_BYTES, min(DEFAULT_CSV_BUFFER_BYTES, memory_limit_bytes // (8 * scan_threads))
    )
    return CsvScanSettings(scan_threads, buffer, min(DEFAULT_MAX_LINE_BYTES, buffer))


def _connection_settings(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """(memory_limit in bytes, threads) of the connection's database."""
    limit, threads = con.execute(
        "SELECT current_setting('memory_limit'), current_setting('threads')"
    ).fetchone()
    return _setting_bytes(limit), int(threads)


def _read_csv_sql(
    path: Path, options: CsvOptions, n_columns: int, rejects: str, settings: CsvScanSettings
) -> str:
    cols = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(n_columns))
    compression = "gzip" if _is_gzip(path) else "none"
    return (
        f"read_csv({_sql_text(str(path))}, columns={{{cols}}}, header=true, auto_detect=false, "
        f"delim={_sql_text(options.delimiter)}, quote={_sql_text(options.quotechar)}, "
        f"escape={_sql_text(options.quotechar)}, strict_mode=true, null_padding=false, "
        f"compression='{compression}', store_rejects=true, rejects_table={_sql_text(rejects)}, "
        f"rejects_scan={_sql_text(rejects + '_scan')}, buffer_size={int(settings.buffer_size)}, "
        f"max_line_size={int(settings.max_line_size)})"
    )


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")


def _has_blank_line(path: Path) -> bool:
    """A conservative test: any empty line anywhere (even inside a quoted field) counts."""
    tail = b""
    with _open_bytes(path) as fh:
        while block := fh.read(1 << 22):
            data = tail + block
            if b"\n\n" in data or b"\n\r\n" in data:
                return True
            tail = data[-2:]
    return False


def _same_line(found: str, duckdb_text: str) -> bool:
    """Whether the line found at DuckDB's byte position is the one DuckDB rejected.  DuckDB shows
    undecodable bytes (and sometimes a byte after them) as '?': compare what comes before and after."""
    if "?" not in duckdb_text:
        return found == duckdb_text
    pieces = duckdb_text.split("?")
    return found.startswith(pieces[0]) and found.endswith(pieces[-1])


def _rejected_lines(path: Path, rejects: list[tuple[int, int, str]]) -> list[bytes]:
    """The bytes of each rejected line (``line_byte_position`` is 1-based), checked against DuckDB's text."""
    out = []
    with _open_bytes(path) as fh:
        for _line, pos, text in rejects:
            fh.seek(pos - 1)
            raw = fh.readline()
            if not _same_line(raw.decode("utf-8", "replace").rstrip("\r\n"), text):
                raise FastFallback("a rejected line could not be located in the file")
            out.append(raw if raw.endswith(b"\n") else raw + b"\n")
    return out


def _python_rows(
    first_line: bytes,
    lines: list[bytes],
    record_numbers: list[int],
    scan: FastScan,
    f: FastFile,
    report: ReadReport,
) -> pd.DataFrame:
    """The rejected lines read by the exact Python reader, one record each, renumbered as in the file."""
    fd, tmp = tempfile.mkstemp(suffix=".csv")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(first_line if first_line.endswith(b"\n") else first_line + b"\n")
            out.writelines(lines)
        part = ReadReport(f.label)
        chunks = list(
            iter_file_chunks(
                tmp,
                fmt="csv",
                options=f.options,
                columns=scan.source_columns,
                chunk_rows=max(len(lines), 1),
                label=f.label,
                report=part,
            )
        )
    finally:
        os.unlink(tmp)
    chunk = pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame()
    if len(chunk) != len(lines) or part.blank_lines:
        raise FastFallback("the Python reader does not read the rejected lines one record each")
    chunk["_source_row"] = record_numbers
    report.parse_errors.update(part.parse_errors)
    return scan.to_raw(chunk)


def load_csv_fast(
    con: duckdb.DuckDBPyConnection,
    target: str,
    insert_columns: list[str],
    scan: FastScan,
    f: FastFile,
    *,
    load_id: str,
    loaded_at,
    insert_chunk: Callable[[pd.DataFrame], None],
    table_columns: list[str],
) -> FastFileResult:
    """Append ``f`` to ``target`` (a raw table being loaded) through DuckDB; see the module docstring.

    Raises :class:`FastFallback` (after removing this file's rows from ``target``) when the file must be
    read by the Python reader; raises :class:`SourceError` for a file that cannot be read at all."""
    result = FastFileResult(f.label, report=ReadReport(f.label))
    header = _CsvFile(f.path, f.options, f.label)  # the Python reader's header checks and errors
    header.close()
    wanted = _check_columns(header.names, scan.source_columns, f.label, header.raw_names)
    index = {c: header.names.index(c) for c in wanted}
    n_cols = len(header.names)
    rejects = f"fast_rejects_{os.getpid()}"
    is_header = " AND ".join(
        f"c{i} IS NOT DISTINCT FROM {_sql_text(v) if v else 'NULL'}"
        for i, v in enumerate(header.header_record)
    )
    bom_header = " AND ".join(
        [f"c0 = {_sql_text(chr(0xFEFF) + header.header_record[0])}"]
        + [
            f"c{i} IS NOT DISTINCT FROM {_sql_text(v) if v else 'NULL'}"
            for i, v in enumerate(header.header_record)
            if i > 0
        ]
    )
    exprs = []
    for c in table_columns:
        if c in scan.columns:
            exprs.append(f"NULLIF(c{index[scan.columns[c]]}, '')")
        elif c in scan.constants:
            exprs.append(_sql_text(scan.constants[c]) if scan.constants[c] != "" else "NULL::VARCHAR")
        elif c == "_parse_error":
            # Reading every column in this expression also makes DuckDB validate every column's bytes.
            exprs.append(f"CASE WHEN ({is_header}) OR ({bom_header}) THEN 'repeated_header' END")
        elif c == "_source_file":
            exprs.append(_sql_text(f.label))
        elif c == "_source_row":
            exprs.append("_g")
        elif c == "_load_id":
            exprs.append("$load_id")
        elif c == "_loaded_at":
            exprs.append("$loaded_at::TIMESTAMP")
        else:
            exprs.append("NULL::VARCHAR")
    cols_sql = ", ".join(quote_ident(c) for c in insert_columns)
    mine = f"_source_file = {_sql_text(f.label)}"
    memory_limit, threads = _connection_settings(con)
    settings = csv_scan_settings(memory_limit, threads)
    if settings.threads < threads:  # a database-wide setting: restored right after the read
        con.execute(f"SET threads = {int(settings.threads)}")
    try:
        con.execute(
            f"INSERT INTO {target} ({cols_sql}) SELECT {', '.join(exprs)} FROM "
            "(SELECT row_number() OVER () AS _g, * FROM "
            f"{_read_csv_sql(f.path, f.options, n_cols, rejects, settings)})",
            {"load_id": load_id, "loaded_at": loaded_at},
        )
        rejected = con.execute(
            f"SELECT DISTINCT line, line_byte_position, error_type::VARCHAR, csv_line FROM {rejects} "
            "ORDER BY line"
        ).fetchall()
    except duckdb.Error as exc:
        con.execute(f"DELETE FROM {target} WHERE {mine}")
        raise FastFallback(f"DuckDB could not read the file ({str(exc).splitlines()[0]})") from None
    finally:
        if settings.threads < threads:
            con.execute(f"SET threads = {int(threads)}")
        con.execute(f"DROP TABLE IF EXISTS {rejects}")
        con.execute(f"DROP TABLE IF EXISTS {rejects}_scan")
    try:
        repeated = con.execute(
            f"SELECT count(*) FROM {target} WHERE {mine} AND _parse_error = 'repeated_header'"
        ).fetchall()[0][0]
        if repeated:
            raise FastFallback(f"{repeated} repeated header rows")
        kinds = {r[2] for r in rejected}
        if kinds - LINE_LOCAL_REJECTS:
            raise FastFallback(f"DuckDB rejected lines as {sorted(kinds - LINE_LOCAL_REJECTS)}")
        if any(r[3] is None or "\n" in r[3] or "\r" in r[3] for r in rejected):
            raise FastFallback("a rejected record spans several lines")
        if len({r[0] for r in rejected}) != len(rejected):
            raise FastFallback("one rejected line was reported twice")
        fast_rows = con.execute(f"SELECT count(*) FROM {target} WHERE {mine}").fetchall()[0][0]
        if rejected:
            # DuckDB's `line` counts blank lines too; the Python reader's row numbers do not.
            if _has_blank_line(f.path):
                raise FastFallback("blank lines together with rejected lines")
            records = [line - 1 for line, *_ in rejected]  # line 1 is the header
            lines = _rejected_lines(f.path, [(r[0], r[1], r[3]) for r in rejected])
            with _open_bytes(f.path) as fh:
                first_line = fh.readline()
            fixed = _python_rows(first_line, lines, records, scan, f, result.report)
            # The k-th accepted record is the k-th record number not taken by a rejected one.
            shifts = pd.DataFrame(
                {"t": [r - j for j, r in enumerate(records, start=1)], "n": range(1, len(records) + 1)}
            )
            con.register("_fast_shifts", shifts)
            try:
                con.execute(
                    f"UPDATE {target} SET _source_row = _source_row + s.n FROM "
                    f"(SELECT g._source_row AS g, max(n) AS n FROM (SELECT _source_row FROM {target} "
                    f"WHERE {mine}) g JOIN _fast_shifts ON t < g._source_row GROUP BY 1) s "
                    f"WHERE {mine} AND {target}._source_row = s.g"
                )
            finally:
                con.unregister("_fast_shifts")
            insert_chunk(fixed)
            result.python_rows = len(fixed)
    except FastFallback:
        con.execute(f"DELETE FROM {target} WHERE {mine}")
        raise
    result.fast_rows = int(fast_rows)
    result.rows = result.fast_rows + result.python_rows
    result.report.rows = result.rows
    result.report.chunks = 1
    return result


def python_file_chunks(scan: FastScan, f: FastFile, chunk_rows: int, report: ReadReport):
    """The whole file through the Python reader and the source's mapping (the fallback)."""
    for chunk in iter_file_chunks(
        f.path,
        fmt="csv",
        options=f.options,
        columns=scan.source_columns,
        chunk_rows=chunk_rows,
        label=f.label,
        report=report,
    ):
        yield scan.to_raw(chunk)


__all__ = [
    "LINE_LOCAL_REJECTS",
    "FastFallback",
    "FastFile",
    "FastFileResult",
    "FastScan",
    "SourceError",
    "csv_options_fast",
    "load_csv_fast",
    "python_file_chunks",
]
