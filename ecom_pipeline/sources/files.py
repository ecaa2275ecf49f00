"""Chunked, fault-tolerant reading of delivered CSV and Parquet files as text.

One implementation shared by every file-based source (:mod:`.olist`, :mod:`.mapped`).  It yields pandas
DataFrames of at most ``chunk_rows`` rows whose data columns are text (``str`` or ``None``), plus:

``_source_file``  the file's label (its name unless the caller gives another);
``_source_row``   1-based number of the data row (records after the header; blank lines do not count);
``_parse_error``  ``None``, or why the row could not be read cleanly (see below);
``_raw_line``     for rows that could not be split into fields: the line as it was in the file.

Values are kept exactly as delivered (no type inference, so ``"01012"`` keeps its leading zero and the
text ``"NA"`` stays text); only the empty string becomes ``None``.

What happens to bad input (each case is covered by a fixture in ``ecom_pipeline_tests/fixtures/bad_input``):

=====================================  =====================================================================
input                                  outcome
=====================================  =====================================================================
missing file                           ``SourceError`` "file not found" naming the file
0-byte file (or a .gz of 0 bytes)      ``SourceError`` "empty file" naming the file
header line only                       no rows, no error
required column absent from header     ``SourceError`` naming the file and the column
line with the wrong number of fields   row emitted, ``_parse_error="wrong_field_count"``, data columns
                                       ``None``, the line in ``_raw_line``
a quote that is never closed           the line that opened it is ``wrong_field_count``; the lines it
                                       swallowed are read again on their own (one bad line does not
                                       eat the rest of the file)
bytes invalid in the declared          the rows containing them: ``_parse_error="invalid_utf8"`` (or
encoding                               ``"invalid_encoding"`` for other encodings), text decoded with U+FFFD
                                       replacement characters, fields kept; other rows are unaffected
the header line repeated in the data   row emitted, ``_parse_error="repeated_header"``, line in ``_raw_line``
                                       (also when it starts with a BOM: concatenated exports)
CR-only line ends (classic Mac)        read like LF line ends
UTF-16/UTF-32 file (byte-order mark)   ``SourceError`` "file is UTF-16 encoded", naming the file
a wanted column twice in the header    ``SourceError`` naming the file and the column (ambiguous)
header read as one column containing   the missing-column ``SourceError`` says which delimiter the
``;``/tab/``|``                        header seems to use
a very long field                      fine up to 128 MiB (the csv module's default limit is 128 KiB);
                                       beyond that, handled like an unclosed quote
truncated or corrupt .gz               ``SourceError`` "truncated or corrupt gzip" naming the file (rows
                                       before the damage may already have been yielded; the raw loader
                                       swaps a table in only after a complete read, so nothing half-read
                                       becomes visible)
a ``.gz`` that is not gzip             ``SourceError`` "not a gzip file"
unreadable Parquet                     ``SourceError`` "not a readable Parquet file"
=====================================  =====================================================================

The CSV path uses the ``csv`` module over lines decoded one at a time, so memory is bounded by the
chunk size and a decoding error is pinned to the rows it affects.  Counts of every outcome are kept in a
:class:`ReadReport` that sources expose through ``describe()``.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import logging
import math
import zlib
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path

import numpy as np
import pandas as pd

from ecom_pipeline.sources.base import DEFAULT_CHUNK_ROWS, SourceError

log = logging.getLogger(__name__)

LINEAGE_COLUMNS = ("_source_file", "_source_row", "_parse_error")
RAW_LINE = "_raw_line"
MAX_FIELD_BYTES = 128 * 1024 * 1024

WRONG_FIELD_COUNT = "wrong_field_count"
REPEATED_HEADER = "repeated_header"
INVALID_UTF8 = "invalid_utf8"
INVALID_ENCODING = "invalid_encoding"

_GZIP_MAGIC = b"\x1f\x8b"
# Byte-order marks of encodings the line-based reader cannot split (UTF-32 first: its LE
# BOM starts like UTF-16's).
_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)
_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
_CSV_SUFFIXES = (".csv", ".tsv", ".txt")


@dataclass(frozen=True)
class CsvOptions:
    """How a delimited text file is written.

    ``header``: 1-based number of the header row (rows before it, e.g. a title line, are skipped);
    ``None`` when the file has no header row, in which case ``names`` gives the column names.
    """

    delimiter: str = ","
    encoding: str = "utf-8"
    header: int | None = 1
    names: tuple[str, ...] | None = None
    quotechar: str = '"'

    def __post_init__(self) -> None:
        if len(self.delimiter) != 1:
            raise SourceError(f"delimiter must be one character, got {self.delimiter!r}")
        if len(self.quotechar) != 1:
            raise SourceError(f"quotechar must be one character, got {self.quotechar!r}")
        if self.header is None and not self.names:
            raise SourceError("a file without a header row needs column names (names)")
        if self.header is not None and self.header < 1:
            raise SourceError(f"header is a 1-based row number, got {self.header!r}")
        try:
            info = codecs.lookup(self.encoding)
        except LookupError:
            raise SourceError(f"unknown encoding {self.encoding!r}") from None
        # Lines are split on b"\n" before decoding: only ASCII-compatible encodings work that way.
        if '\n,;\t|"'.encode(info.name) != b'\n,;\t|"' or info.name.startswith(("utf-16", "utf-32")):
            raise SourceError(
                f"encoding {self.encoding!r} is not ASCII-compatible; convert the file to UTF-8 first"
            )


@dataclass
class ReadReport:
    """What reading one file produced: rows, and rows with each kind of parse error."""

    file: str
    rows: int = 0
    chunks: int = 0
    blank_lines: int = 0
    parse_errors: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {
            "file": self.file,
            "rows": self.rows,
            "chunks": self.chunks,
            "blank_lines": self.blank_lines,
            "parse_errors": dict(self.parse_errors),
        }


def detect_format(path: Path | str, declared: str | None = None) -> str:
    """``csv`` or ``parquet``: the declared format, else from the extension (``.gz`` is looked through)."""
    if declared:
        fmt = declared.lower()
        if fmt not in ("csv", "parquet"):
            raise SourceError(f"unknown format {declared!r}; use csv or parquet", file=str(path))
        return fmt
    name = Path(path).name.lower()
    name = name.removesuffix(".gz")
    if name.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(_CSV_SUFFIXES):
        return "csv"
    raise SourceError("cannot tell the format from the file name; set format: csv or parquet", file=str(path))


def default_delimiter(path: Path | str) -> str:
    name = Path(path).name.lower().removesuffix(".gz")
    return "\t" if name.endswith(".tsv") else ","


# --------------------------------------------------------------------------------------------------
# Low-level byte access


def _open_binary(path: Path, label: str) -> io.BufferedIOBase:
    """Open ``path`` for binary reading, transparently gunzipping; SourceError on absent/empty files."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - returned to the caller
    except FileNotFoundError:
        raise SourceError("file not found", file=label) from None
    except OSError as exc:
        raise SourceError(f"cannot open file: {exc}", file=label) from None
    head = fh.read(2)
    fh.seek(0)
    if not head:
        fh.close()
        raise SourceError("empty file (0 bytes)", file=label)
    if head == _GZIP_MAGIC:
        return io.BufferedReader(gzip.GzipFile(fileobj=fh, mode="rb"), buffer_size=1 << 20)
    if path.name.lower().endswith(".gz"):
        fh.close()
        raise SourceError("not a gzip file although the name ends in .gz", file=label)
    return io.BufferedReader(fh, buffer_size=1 << 20)


def _gzip_errors() -> tuple[type[BaseException], ...]:
    return (EOFError, zlib.error, gzip.BadGzipFile)


class _LineFeed:
    """Decoded lines for ``csv.reader``.

    Every line handed to the reader is appended to ``window``; line number ``k`` (1-based, as counted by
    ``reader.line_num``) is ``window[k - offset - 1]``, so the lines of a record are known without any
    per-record bookkeeping.  Lines that fail to decode are decoded with replacement characters and their
    numbers put in ``bad``.  Lines can be pushed back (after an unclosed quote swallowed them) and are
    then handed out again, with new numbers.
    """

    def __init__(self, raw: Iterable[bytes], encoding: str, label: str, strip_bom: bool):
        self._raw = raw
        self._encoding = encoding
        self._label = label
        self._strip_bom = strip_bom
        self.window: list[str] = []
        self.offset = 0
        self.bad: set[int] = set()
        self.pending: deque[tuple[str, bool]] = deque()

    def lines(self, start: int, end: int) -> list[str]:
        """Lines ``start+1 .. end`` (reader line numbers)."""
        return self.window[start - self.offset : end - self.offset]

    def any_bad(self, start: int, end: int) -> bool:
        return any(k in self.bad for k in range(start + 1, end + 1))

    def forget_before(self, line_num: int) -> None:
        """Drop lines up to ``line_num`` (all belong to records already handled)."""
        del self.window[: line_num - self.offset]
        self.offset = line_num
        if self.bad:
            self.bad = {k for k in self.bad if k > line_num}

    def push_back(self, start: int, end: int) -> None:
        """Hand lines ``start+1 .. end`` to the reader again, before any new line."""
        items = [(line, (start + 1 + i) in self.bad) for i, line in enumerate(self.lines(start, end))]
        self.pending.extendleft(reversed(items))

    def __iter__(self) -> Iterator[str]:
        enc = self._encoding
        window, pending = self.window, self.pending
        append = window.append
        first = self._strip_bom
        try:
            for raw in self._raw:
                try:
                    line = raw.decode(enc)
                except UnicodeDecodeError:
                    line = raw.decode(enc, errors="replace")
                    self.bad.add(self.offset + len(window) + 1)
                if first:
                    first = False
                    line = line.removeprefix("\ufeff")
                append(line)
                yield line
                while pending:
                    yield self._pop_pending()
        except _gzip_errors() as exc:
            raise SourceError(f"truncated or corrupt gzip ({exc})", file=self._label) from None
        except OSError as exc:
            raise SourceError(f"read error: {exc}", file=self._label) from None
        while pending:  # pushed back after the last raw line was read
            yield self._pop_pending()

    def drain(self) -> Iterator[str]:
        while self.pending:
            yield self._pop_pending()

    def _pop_pending(self) -> str:
        line, is_bad = self.pending.popleft()
        self.window.append(line)
        if is_bad:
            self.bad.add(self.offset + len(self.window))
        return line


def _raise_field_limit() -> None:
    if csv.field_size_limit() < MAX_FIELD_BYTES:
        csv.field_size_limit(MAX_FIELD_BYTES)


def _dedupe_names(names: Sequence[str]) -> list[str]:
    seen: Counter = Counter()
    out = []
    for n in names:
        out.append(f"{n}.{seen[n]}" if seen[n] else n)
        seen[n] += 1
    return out


# --------------------------------------------------------------------------------------------------
# CSV


def _refuse_wide_encoding(binary: io.BufferedReader, label: str) -> None:
    """SourceError for a UTF-16/32 file (e.g. Excel's "Unicode text"): read as bytes it would only give
    garbled column names."""
    try:
        head = binary.peek(4)[:4]
    except _gzip_errors() as exc:
        raise SourceError(f"truncated or corrupt gzip ({exc})", file=label) from None
    for bom, name in _WIDE_BOMS:
        if head.startswith(bom):
            raise SourceError(
                f"file is {name} encoded (byte-order mark {bom.hex()}); save or convert it as UTF-8",
                file=label,
            )


def _cr_only(binary: io.BufferedReader) -> bool:
    """Classic-Mac line endings (Excel for Mac's "CSV (Macintosh)"): CRs and no LF in the first block."""
    head = binary.peek(1 << 16)
    return b"\r" in head and b"\n" not in head


def _cr_lines(binary: io.BufferedReader) -> Iterator[bytes]:
    """The lines of a CR-only file, each ending in LF (a CR inside a quoted field becomes an LF)."""
    rest = b""
    while block := binary.read(1 << 20):
        parts = (rest + block).split(b"\r")
        rest = parts.pop()
        for part in parts:
            yield part + b"\n"
    if rest:
        yield rest


class _CsvFile:
    """An open CSV file: its header and a reader positioned after it."""

    def __init__(self, path: Path, options: CsvOptions, label: str):
        _raise_field_limit()
        self.label = label
        self.binary = _open_binary(path, label)
        enc = codecs.lookup(options.encoding).name
        utf8 = enc in ("utf-8", "utf-8-sig")
        self.decode_error = INVALID_UTF8 if utf8 else INVALID_ENCODING
        _refuse_wide_encoding(self.binary, label)
        lines = _cr_lines(self.binary) if _cr_only(self.binary) else self.binary
        self.feed = _LineFeed(lines, "utf-8" if utf8 else options.encoding, label, strip_bom=utf8)
        self._options = options
        self.reader = self.make_reader(iter(self.feed))
        self.blank_lines = 0
        try:
            self.names, self.header_record, self.raw_names = self._read_header(options)
        except BaseException:
            self.close()
            raise

    def make_reader(self, lines: Iterator[str]):
        return csv.reader(
            lines, delimiter=self._options.delimiter, quotechar=self._options.quotechar, strict=False
        )

    def restart_on_pending(self) -> bool:
        """After the end of the file: if lines were pushed back, read them with a fresh reader."""
        feed = self.feed
        if not feed.pending:
            return False
        feed.window.clear()
        feed.offset = 0
        feed.bad = set()
        self.reader = self.make_reader(feed.drain())
        return True

    def close(self) -> None:
        self.binary.close()

    def _next_nonblank(self) -> list[str] | None:
        for rec in self.reader:
            if rec:
                return rec
            self.blank_lines += 1
        return None

    def _read_header(self, options: CsvOptions) -> tuple[list[str], list[str] | None, list[str]]:
        """(column names, the header record as read, the header's names before duplicates are renamed)."""
        if options.header is None:
            return list(options.names or ()), None, list(options.names or ())
        rec = None
        for _ in range(options.header):
            try:
                rec = self._next_nonblank()
            except csv.Error as exc:
                raise SourceError(f"cannot read the header: {exc}", file=self.label) from None
            if rec is None:
                msg = (
                    "empty file (no header row)" if options.header == 1 else f"no header row {options.header}"
                )
                raise SourceError(msg, file=self.label)
        if options.names:
            return list(options.names), rec, list(options.names)
        raw_names = [f.strip() for f in rec]
        return _dedupe_names(raw_names), rec, raw_names


def read_csv_header(
    path: Path | str, options: CsvOptions = CsvOptions(), label: str | None = None
) -> list[str]:
    path = Path(path)
    f = _CsvFile(path, options, label or path.name)
    f.close()
    return f.names


def _iter_csv(
    path: Path,
    options: CsvOptions,
    columns: Sequence[str] | None,
    chunk_rows: int,
    label: str,
    report: ReadReport,
) -> Iterator[pd.DataFrame]:
    f = _CsvFile(path, options, label)
    try:
        wanted = _check_columns(f.names, columns, label, f.raw_names)
        idx = [f.names.index(c) for c in wanted]
        n_fields = len(f.names)
        if idx == list(range(n_fields)):
            project = tuple
        elif len(idx) == 1:
            i0 = idx[0]

            def project(rec):
                return (rec[i0],)
        elif idx:
            project = itemgetter(*idx)
        else:

            def project(rec):
                return ()

        empty = (None,) * len(wanted)
        header = f.header_record
        # `cat a.csv b.csv` of exports that each start with a BOM: the second header begins with one.
        bom_header = ["\ufeff" + header[0], *header[1:]] if header else None
        reader, feed = f.reader, f.feed
        decode_error = f.decode_error
        report.blank_lines += f.blank_lines

        rows: list[tuple] = []
        errors: dict[int, str] = {}  # position in chunk -> reason
        raws: dict[int, str] = {}
        row_no = 0
        first_row = 1
        prev = reader.line_num  # reader line number where the previous record ended
        feed.forget_before(prev)
        while True:
            try:
                for rec in reader:
                    ln = reader.line_num
                    if not rec:
                        report.blank_lines += 1
                        prev = ln
                        continue
                    row_no += 1
                    if len(rec) == n_fields and rec != header and rec != bom_header:
                        rows.append(project(rec))
                        if feed.bad and feed.any_bad(prev, ln):
                            errors[len(rows) - 1] = decode_error
                    else:
                        pos = len(rows)
                        rows.append(empty)
                        if len(rec) != n_fields:
                            errors[pos] = WRONG_FIELD_COUNT
                            if ln - prev > 1:  # an unclosed quote swallowed lines: read them again
                                feed.push_back(prev + 1, ln)
                            raws[pos] = feed.lines(prev, prev + 1)[0].rstrip("\r\n")
                        else:
                            errors[pos] = REPEATED_HEADER
                            raws[pos] = "".join(feed.lines(prev, ln)).rstrip("\r\n")
                    prev = ln
                    if len(rows) >= chunk_rows:
                        feed.forget_before(ln)
                        yield _frame(wanted, rows, errors, raws, first_row, label, report)
                        first_row = row_no + 1
                        rows, errors, raws = [], {}, {}
                if not f.restart_on_pending():
                    break
                reader, prev = f.reader, 0
                continue
            except csv.Error as exc:
                # The field-size limit: treat like an unclosed quote (the first line is bad, the rest is
                # read again).
                ln = reader.line_num
                if ln <= prev:
                    raise SourceError(f"CSV error: {exc}", file=label) from None
                log.warning("%s: %s; re-reading the lines it swallowed", label, exc)
                row_no += 1
                pos = len(rows)
                rows.append(empty)
                errors[pos] = WRONG_FIELD_COUNT
                raws[pos] = feed.lines(prev, prev + 1)[0].rstrip("\r\n")
                if ln - prev > 1:
                    feed.push_back(prev + 1, ln)
                prev = ln
        if rows:
            yield _frame(wanted, rows, errors, raws, first_row, label, report)
    finally:
        f.close()


def _frame(
    columns: Sequence[str],
    rows: list[tuple],
    errors: dict[int, str],
    raws: dict[int, str],
    first_row: int,
    label: str,
    report: ReadReport,
) -> pd.DataFrame:
    n = len(rows)
    values = np.empty((n, len(columns)), dtype=object)
    if columns:
        values[:] = rows
        values[values == ""] = None
    df = pd.DataFrame(values, columns=list(columns), index=pd.RangeIndex(n))
    err = np.full(n, None, dtype=object)
    raw = np.full(n, None, dtype=object)
    for pos, reason in errors.items():
        err[pos] = reason
        report.parse_errors[reason] += 1
    for pos, text in raws.items():
        raw[pos] = text
    df["_source_file"] = label
    df["_source_row"] = np.arange(first_row, first_row + n, dtype="int64")
    df["_parse_error"] = err
    df[RAW_LINE] = raw
    report.rows += n
    report.chunks += 1
    return df


def _check_columns(
    names: Sequence[str], columns: Sequence[str] | None, label: str, raw_names: Sequence[str] | None = None
) -> list[str]:
    """The wanted columns; SourceError naming the file and the column when one is missing, or appears more
    than once in the header (``raw_names``: the header before duplicates were renamed ``name.1``...)."""
    if columns is None:
        return list(names)
    missing = [c for c in columns if c not in names]
    if missing:
        raise SourceError(
            f"source column {missing[0]!r} is not in the file{_missing_column_hint(missing[0], names)}; "
            f"missing: {missing}; the file has: {list(names)}",
            file=label,
            column=missing[0],
        )
    raw = list(raw_names if raw_names is not None else names)
    for c in dict.fromkeys(columns):
        if raw.count(c) > 1:
            positions = [i + 1 for i, n in enumerate(raw) if n == c]
            raise SourceError(
                f"column {c!r} appears {len(positions)} times in the header (columns {positions}): which one "
                "is meant is ambiguous; rename the duplicates in the file, or give every column a name with "
                "`names: [...]`",
                file=label,
                column=c,
            )
    return list(dict.fromkeys(columns))


def _missing_column_hint(missing: str, names: Sequence[str]) -> str:
    """' (did you mean ...?)', or a delimiter hint when the whole header was read as one column."""
    import difflib

    if len(names) == 1:
        for delim, word in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe"), (",", "comma")):
            if delim in names[0]:
                return (
                    f" (the header was read as one column containing {delim!r}: is the file "
                    f"{word}-delimited? set delimiter: {word})"
                )
    close = difflib.get_close_matches(missing, names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def require_columns(
    path: Path | str,
    columns: Sequence[str],
    fmt: str | None = None,
    options: CsvOptions | None = None,
    label: str | None = None,
) -> None:
    """SourceError naming the file and column unless every one of ``columns`` is in the file's header,
    exactly once (reads only the header / the Parquet schema)."""
    path = Path(path)
    label = label or path.name
    fmt = detect_format(path, fmt)
    if fmt == "parquet":
        names = read_parquet_header(path, label)
        _check_columns(_dedupe_names(names), columns, label, names)
        return
    f = _CsvFile(path, options or CsvOptions(delimiter=default_delimiter(path)), label)
    f.close()
    _check_columns(f.names, columns, label, f.raw_names)


# --------------------------------------------------------------------------------------------------
# Parquet


def _parquet_file(path: Path, label: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.exists():
        raise SourceError("file not found", file=label)
    if path.stat().st_size == 0:
        raise SourceError("empty file (0 bytes)", file=label)
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise SourceError(f"not a readable Parquet file ({exc})", file=label) from None


def read_parquet_header(path: Path | str, label: str | None = None) -> list[str]:
    path = Path(path)
    return list(_parquet_file(path, label or path.name).schema_arrow.names)


def _arrow_text(col) -> list:
    """An Arrow column as a list of str/None, written the way a CSV export would write it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = col.type
    if pa.types.is_timestamp(t):
        if t.tz is not None:
            col = pc.cast(col, pa.timestamp(t.unit))  # wall time in UTC
        try:  # whole seconds (the usual case) are written without a fraction
            col = pc.strftime(col.cast(pa.timestamp("s"), safe=True), format="%Y-%m-%d %H:%M:%S")
        except pa.ArrowInvalid:
            col = pc.strftime(col, format="%Y-%m-%d %H:%M:%S")  # keeps the fraction: 21:57:05.250000
    elif pa.types.is_date(t):
        col = pc.strftime(col, format="%Y-%m-%d")
    elif pa.types.is_dictionary(t):
        col = pc.cast(col, t.value_type)
        return _arrow_text(col)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        try:
            col = pc.cast(col, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return [None if v is None else str(v) for v in col.to_pylist()]
    return [v if v else None for v in col.to_pylist()]


def _iter_parquet(
    path: Path, columns: Sequence[str] | None, chunk_rows: int, label: str, report: ReadReport
) -> Iterator[pd.DataFrame]:
    import pyarrow as pa

    pf = _parquet_file(path, label)
    wanted = _check_columns(list(pf.schema_arrow.names), columns, label)
    if len(set(pf.schema_arrow.names)) < len(pf.schema_arrow.names):
        _check_columns(_dedupe_names(pf.schema_arrow.names), wanted, label, pf.schema_arrow.names)
    first_row = 1
    try:
        for batch in pf.iter_batches(batch_size=chunk_rows, columns=wanted):
            n = batch.num_rows
            if n == 0:
                continue
            df = pd.DataFrame(
                {c: np.array(_arrow_text(batch.column(c)), dtype=object) for c in wanted},
                index=pd.RangeIndex(n),
            )
            df["_source_file"] = label
            df["_source_row"] = pd.RangeIndex(first_row, first_row + n).to_numpy(dtype="int64")
            df["_parse_error"] = None
            df[RAW_LINE] = None
            first_row += n
            report.rows += n
            report.chunks += 1
            yield df
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise SourceError(f"not a readable Parquet file ({exc})", file=label) from None


# --------------------------------------------------------------------------------------------------
# Public entry points


def read_header(
    path: Path | str, fmt: str | None = None, options: CsvOptions | None = None, label: str | None = None
) -> list[str]:
    """Column names of a file (reads only the header / the Parquet schema)."""
    path = Path(path)
    fmt = detect_format(path, fmt)
    if fmt == "parquet":
        return read_parquet_header(path, label)
    return read_csv_header(path, options or CsvOptions(delimiter=default_delimiter(path)), label)


def iter_file_chunks(
    path: Path | str,
    *,
    fmt: str | None = None,
    options: CsvOptions | None = None,
    columns: Sequence[str] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    label: str | None = None,
    report: ReadReport | None = None,
) -> Iterator[pd.DataFrame]:
    """Yield text chunks of ``path`` (see module docstring).

    ``columns``: the source columns to keep; each must exist (SourceError naming file and column).
    ``None`` keeps all.  ``report`` (optional) is filled with counts as reading proceeds.
    """
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be >= 1")
    path = Path(path)
    label = label or path.name
    report = report if report is not None else ReadReport(label)
    fmt = detect_format(path, fmt)
    if fmt == "parquet":
        yield from _iter_parquet(path, columns, chunk_rows, label, report)
    else:
        yield from _iter_csv(
            path, options or CsvOptions(delimiter=default_delimiter(path)), columns, chunk_rows, label, report
        )
    if report.parse_errors:
        log.warning("%s: %d rows, rows with parse errors: %s", label, report.rows, dict(report.parse_errors))


def read_file(path: Path | str, **kwargs) -> pd.DataFrame:
    """The whole file as one text frame (for small lookup files)."""
    chunks = list(iter_file_chunks(path, **kwargs))
    if not chunks:
        cols = list(kwargs.get("columns") or [])
        return pd.DataFrame({c: pd.Series(dtype=object) for c in [*cols, *LINEAGE_COLUMNS, RAW_LINE]})
    return pd.concat(chunks, ignore_index=True)


def finish_chunk(chunk: pd.DataFrame, values: dict[str, object], raw_line_column: str) -> pd.DataFrame:
    """Build a raw canonical chunk from ``values`` (canonical column -> Series/list/scalar) and the
    lineage of ``chunk``.

    Rows that could not be split (``_raw_line`` set) get every canonical column ``None`` except
    ``raw_line_column``, which carries the line, so staging quarantines them with their text.  All values
    become text or ``None``.
    """
    n = len(chunk)
    out = pd.DataFrame(index=chunk.index)
    for name, v in values.items():
        if isinstance(v, pd.Series):
            s = v.astype(object)
        elif isinstance(v, (list, tuple)):
            s = pd.Series(list(v), index=chunk.index, dtype=object)
        else:
            s = pd.Series([v] * n, index=chunk.index, dtype=object)
        out[name] = s.map(_as_text, na_action=None) if n else s
    if raw_line_column not in out.columns:
        out[raw_line_column] = None
    if RAW_LINE in chunk.columns:
        bad = chunk[RAW_LINE].notna()
        if bad.any():
            for name in out.columns:
                out.loc[bad, name] = None
            out.loc[bad, raw_line_column] = chunk.loc[bad, RAW_LINE]
    out["_source_file"] = chunk["_source_file"].values
    out["_source_row"] = chunk["_source_row"].astype("int64").values
    out["_parse_error"] = chunk["_parse_error"].values if "_parse_error" in chunk.columns else None
    return out


def _as_text(v):
    if v is None:
        return None
    if isinstance(v, str):
        return v if v != "" else None
    if isinstance(v, float):
        if math.isnan(v):
            return None
        return repr(v)
    if v is pd.NA or v is pd.NaT:
        return None
    return str(v)
