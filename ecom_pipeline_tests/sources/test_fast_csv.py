"""The DuckDB fast path for CSV files puts exactly what the Python reader puts into raw (and so staging and
the quarantine are the same): compared by table fingerprint over the bad-input corpus and a larger file."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import duckdb
import pytest

from ecom_pipeline.cleaning.staging import stage_table
from ecom_pipeline.loading import load_raw_table
from ecom_pipeline.paths import DataPaths
from ecom_pipeline.sources.base import SourceError
from ecom_pipeline.sources.mapped import MappedSource
from ecom_pipeline.warehouse.tables import PER_RUN_COLUMNS, load_counts, table_fingerprint

BAD = Path(__file__).resolve().parents[1] / "fixtures" / "bad_input"


def _orders_source(folder: Path, file: str, delimiter: str = ",", **columns) -> MappedSource:
    cols = {"order_id": "order_id", "customer_id": "customer_id", "status": "status", **columns}
    mapping = {
        "version": 1,
        "tables": {
            "orders": {
                "file": file,
                "delimiter": delimiter,
                "columns": cols,
                "constants": {"purchased_at": "2024-01-02 10:00:00"},
            }
        },
    }
    return MappedSource(mapping, data_dir=folder)


def _load_both(tmp_path: Path, source_fn) -> tuple[dict, dict, object, object]:
    """raw + staging through the fast path and through the Python reader; fingerprints and load results."""
    out = []
    for fast in (True, False):
        con = duckdb.connect(str(tmp_path / f"w_{fast}.duckdb"))
        result = load_raw_table(con, source_fn(), "orders", load_id="L", fast_path=fast)
        stage_table(con, "orders", pseudonym_key=b"k")
        prints = {
            t: table_fingerprint(con, t, PER_RUN_COLUMNS)
            for t in ("raw.orders", "staging.orders", "staging.quarantine")
        }
        prints["counts"] = load_counts(con, ["orders"])
        con.close()
        out.append((prints, result))
    return out[0][0], out[1][0], out[0][1], out[1][1]


@pytest.mark.parametrize(
    "name, fast_rows, python_rows, falls_back",
    [
        ("wrong_field_count.csv", 2, 2, False),  # two rejected lines read by the Python reader
        ("invalid_utf8.csv", 2, 1, False),  # the Latin-1 byte: invalid_utf8 row from the Python reader
        ("repeated_header.csv", 0, 0, True),  # whole file through the Python reader
        ("unclosed_quote.csv", 0, 0, True),
        ("header_only.csv", 0, 0, False),
    ],
)
def test_fast_path_gives_the_python_readers_raw_rows(tmp_path, name, fast_rows, python_rows, falls_back):
    shutil.copy(BAD / name, tmp_path / name)
    fast, slow, fast_result, slow_result = _load_both(tmp_path, lambda: _orders_source(tmp_path, name))
    assert fast == slow
    assert (fast_result.fast_rows, fast_result.python_rows) == (fast_rows, python_rows)
    assert bool(fast_result.fast_fallbacks) == falls_back
    assert slow_result.fast_rows == 0 and fast_result.rows == slow_result.rows


def test_semicolon_bom_crlf_multiline_blank_line(tmp_path):
    shutil.copy(BAD / "bom_crlf_semicolon.csv", tmp_path / "b.csv")
    fast, slow, result, _ = _load_both(
        tmp_path, lambda: _orders_source(tmp_path, "b.csv", ";", customer_id="zip", status="note")
    )
    assert fast == slow
    assert result.rows == 3


def test_empty_and_missing_column_are_the_same_errors(tmp_path):
    shutil.copy(BAD / "missing_column.csv", tmp_path / "m.csv")
    with pytest.raises(SourceError, match="customer_id"):
        _orders_source(tmp_path, "m.csv")
    (tmp_path / "e.csv").write_text("order_id,customer_id,status\no1,c1,x\n")
    source = _orders_source(tmp_path, "e.csv")
    (tmp_path / "e.csv").write_bytes(b"")  # emptied after the mapping was checked
    con = duckdb.connect()
    with pytest.raises(SourceError, match="empty file"):
        load_raw_table(con, source, "orders", load_id="L")


def test_gzip_content_is_found_by_its_bytes_not_its_name(tmp_path):
    with gzip.open(tmp_path / "plain_name.csv", "wb") as fh:  # gzip stream, no .gz in the name
        fh.write(b"order_id,customer_id,status\no1,c1,delivered\no2,c2\n")
    fast, slow, result, _ = _load_both(tmp_path, lambda: _orders_source(tmp_path, "plain_name.csv"))
    assert fast == slow and (result.fast_rows, result.python_rows) == (1, 1)
    (tmp_path / "not_gzip.csv.gz").write_text("order_id,customer_id,status\no1,c1,x\n")
    with pytest.raises(SourceError, match="not a gzip file"):
        _orders_source(tmp_path, "not_gzip.csv.gz")


def test_larger_gzip_file_with_scattered_bad_lines_keeps_row_numbers(tmp_path):
    """20k rows (several DuckDB vectors and threads) with bad lines spread through it: same raw rows,
    same quarantine; row numbers after each rejected line are shifted exactly."""
    lines = ["order_id,customer_id,status"]
    for i in range(1, 20_001):
        if i % 997 == 0:
            lines.append(f"o{i},c{i}")  # too few fields
        elif i % 1499 == 0:
            lines.append(f"o{i},c{i},x,y")  # too many
        elif i % 4001 == 0:
            lines.append(f'o{i},"multi\nline",ok')  # a quoted line break: one record, two lines
        else:
            lines.append(f"o{i},c{i % 500},{'delivered' if i % 3 else ''}")
    data = ("\n".join(lines) + "\n").encode()
    data = data.replace(b"o12345,c345,", b"o12345,S\xe3o,")  # one undecodable byte
    with gzip.open(tmp_path / "big.csv.gz", "wb") as fh:
        fh.write(data)
    fast, slow, result, _ = _load_both(tmp_path, lambda: _orders_source(tmp_path, "big.csv.gz"))
    assert fast == slow
    assert not result.fast_fallbacks
    assert (
        result.python_rows
        == 20_000 // 997 + len([i for i in range(1, 20_001) if i % 1499 == 0 and i % 997]) + 1
    )
    assert fast["counts"]["orders"]["raw"] == 20_000


@pytest.mark.slow
def test_multi_buffer_file_read_in_parallel_keeps_row_order_and_numbers(tmp_path):
    """~40 MB: DuckDB splits it across threads and buffers; row numbers (and the shift after each rejected
    line) must still be the Python reader's.  Compared on raw only (staging adds nothing here)."""
    rng = range(1, 400_001)
    pad = "x" * 80
    lines = ["order_id,customer_id,status"]
    for i in rng:
        lines.append(f"o{i},c{i}" if i % 40_009 == 0 else f"o{i},c{i % 977},{pad}{i}")
    (tmp_path / "wide.csv").write_text("\n".join(lines) + "\n")
    prints, results = [], []
    for fast in (True, False):
        con = duckdb.connect(str(tmp_path / f"w{fast}.duckdb"), config={"threads": 2})
        results.append(
            load_raw_table(con, _orders_source(tmp_path, "wide.csv"), "orders", load_id="L", fast_path=fast)
        )
        prints.append(table_fingerprint(con, "raw.orders", PER_RUN_COLUMNS))
        # the row number of a row is its position in the file: o<i> is row i
        assert (
            con.execute(
                "SELECT count(*) FROM raw.orders WHERE _parse_error IS NULL "
                "AND order_id <> 'o' || _source_row"
            ).fetchall()[0][0]
            == 0
        )
        con.close()
    assert prints[0] == prints[1]
    assert (results[0].fast_rows, results[0].python_rows, results[0].fast_fallbacks) == (399_991, 9, {})


def test_the_pipelines_source_wrapper_keeps_the_fast_path(tmp_path):
    """SourceResource wraps every source in WithOnlineEvents: the fast path must survive the wrapper, except
    for `events` when the serving app's archived events are appended to it."""
    from ecom_pipeline.sources.online_events import PREFIX, WithOnlineEvents

    shutil.copy(BAD / "wrong_field_count.csv", tmp_path / "o.csv")
    wrapped = WithOnlineEvents(
        _orders_source(tmp_path, "o.csv"), DataPaths(tmp_path / "root").inbox_processed
    )
    assert wrapped.fast_scan("orders") is not None
    con = duckdb.connect()
    assert load_raw_table(con, wrapped, "orders", load_id="L").fast_rows == 2
    events = {
        "version": 1,
        "tables": {
            "events": {
                "file": "e.csv",
                "columns": {
                    "event_id": "id",
                    "ts": "ts",
                    "event_type": "type",
                    "customer_id": "who",
                    "session_id": "s",
                    "product_id": "p",
                },
            }
        },
    }
    (tmp_path / "e.csv").write_text("id,ts,type,who,s,p\ne1,2024-05-01 10:00:00,view,c1,s1,p1\n")
    archive = tmp_path / "root" / "inbox" / "processed" / "2024-05-01"
    archive.mkdir(parents=True)
    (archive / f"{PREFIX}2024-05-01_x.csv").write_text(
        "event_id,ts,customer_id,session_id,event_type,product_id\ne2,2024-05-01 11:00:00,c1,s1,view,p1\n"
    )
    wrapped = WithOnlineEvents(
        MappedSource(events, data_dir=tmp_path), DataPaths(tmp_path / "root").inbox_processed
    )
    assert wrapped.fast_scan("events") is None
    assert load_raw_table(con, wrapped, "events", load_id="L").rows == 2


def test_raw_asset_metadata_says_what_the_fast_path_did(tmp_path):
    import dagster as dg
    import yaml

    from ecom_pipeline.assets.ingest import _raw_asset
    from ecom_pipeline.resources import SourceResource, WarehouseResource
    from ecom_pipeline.resources.paths import PathsResource

    shutil.copy(BAD / "wrong_field_count.csv", tmp_path / "orders.csv")
    mapping = {
        "version": 1,
        "tables": {
            "orders": {
                "file": "orders.csv",
                "columns": {"order_id": "order_id", "customer_id": "customer_id", "status": "status"},
                "constants": {"purchased_at": "2024-01-02 10:00:00"},
            }
        },
    }
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(mapping))
    result = dg.materialize(
        [_raw_asset("orders")],
        instance=dg.DagsterInstance.ephemeral(),
        resources={
            "source": SourceResource(
                kind="mapped",
                mapping=str(tmp_path / "m.yaml"),
                data_dir=str(tmp_path),
                data_root=str(DataPaths(tmp_path / "root").inbox_processed),
            ),
            "paths": PathsResource(data_root=str(DataPaths(tmp_path / "root").inbox_processed)),
            "warehouse": WarehouseResource(path=str(tmp_path / "w.duckdb")),
        },
    )
    meta = result.asset_materializations_for_node("raw__orders")[0].metadata
    assert meta["dagster/row_count"].value == 4
    assert (meta["fast_path_rows"].value, meta["python_reader_rows_of_rejected_lines"].value) == (2, 2)
    assert meta["files_read_by_python_reader"].value == "none"


def test_scan_settings_fit_the_connections_memory_limit():
    """Under a small memory_limit DuckDB 1.5 could not allocate read_csv's default 32 MiB buffer, so every
    file silently took the Python reader: the buffer and the scanning threads now follow the limit."""
    from ecom_pipeline.sources.fast_csv import (
        DEFAULT_CSV_BUFFER_BYTES,
        DEFAULT_MAX_LINE_BYTES,
        MIN_SCAN_BYTES_PER_THREAD,
        csv_scan_settings,
    )

    roomy = csv_scan_settings(8 * 2**30, 2)
    assert (roomy.threads, roomy.buffer_size, roomy.max_line_size) == (
        2,
        DEFAULT_CSV_BUFFER_BYTES,
        DEFAULT_MAX_LINE_BYTES,
    )
    tight = csv_scan_settings(int(15.2 * 2**20), 2)  # SET memory_limit = '16MB'
    assert tight.threads == 1
    assert tight.max_line_size <= tight.buffer_size <= int(15.2 * 2**20) // 8
    assert csv_scan_settings(3 * MIN_SCAN_BYTES_PER_THREAD, 8).threads == 3
    from ecom_pipeline.sources.fast_csv import _setting_bytes

    assert _setting_bytes("15.2 MiB") == int(15.2 * 2**20) and _setting_bytes("1.8 GiB") == int(1.8 * 2**30)
    assert _setting_bytes("an unknown form") == 2**62  # as unlimited: DuckDB's defaults


def test_fast_path_reads_under_a_small_memory_limit_and_restores_threads(tmp_path):
    """The 16 MB limit of the big-file memory test: the file is read by DuckDB (not the fallback), with the
    Python reader's rows and row numbers, and the connection keeps its thread count afterwards."""
    lines = ["order_id,customer_id,status"]
    for i in range(1, 60_001):
        lines.append(f"o{i},c{i}" if i % 9_973 == 0 else f"o{i},c{i % 500},{'delivered ' * 8}{i}")
    (tmp_path / "o.csv").write_text("\n".join(lines) + "\n")
    prints, results = [], []
    for fast in (True, False):
        # the reference (Python reader) gets room: the test is about the fast path under the small limit
        limit = "16MB" if fast else "1GB"
        con = duckdb.connect(str(tmp_path / f"w{fast}.duckdb"), config={"threads": 2, "memory_limit": limit})
        results.append(
            load_raw_table(
                con,
                _orders_source(tmp_path, "o.csv"),
                "orders",
                load_id="L",
                fast_path=fast,
                chunk_rows=10_000,
            )
        )
        assert con.execute("SELECT current_setting('threads')").fetchone()[0] == 2
        prints.append(table_fingerprint(con, "raw.orders", PER_RUN_COLUMNS))
        con.close()
    assert prints[0] == prints[1]
    assert (results[0].fast_rows, results[0].python_rows, results[0].fast_fallbacks) == (59_994, 6, {})
