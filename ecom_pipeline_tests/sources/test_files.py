"""The shared file reader on the bad-input corpus (ecom_pipeline_tests/fixtures/bad_input): exact outcomes."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import pandas as pd
import pytest

from ecom_pipeline.sources import files
from ecom_pipeline.sources.base import SourceError
from ecom_pipeline.sources.files import (
    CsvOptions,
    ReadReport,
    finish_chunk,
    iter_file_chunks,
    read_file,
    read_header,
)

BAD = Path(__file__).resolve().parents[1] / "fixtures" / "bad_input"


def _read(name: str, **kw) -> tuple[pd.DataFrame, ReadReport]:
    report = ReadReport(name)
    df = read_file(BAD / name, report=report, **kw)
    return df, report


def test_wrong_field_count_rows_are_kept_with_their_line():
    df, report = _read("wrong_field_count.csv")
    assert df["_source_row"].tolist() == [1, 2, 3, 4]
    assert df["_parse_error"].tolist() == [None, "wrong_field_count", "wrong_field_count", None]
    assert df["_raw_line"].tolist() == [None, "o2,c2,delivered,EXTRA", "o3,c3", None]
    assert df.loc[1, ["order_id", "customer_id", "status"]].isna().all()
    assert df.loc[3, "status"] == "shipped"
    assert report.rows == 4 and report.parse_errors == {"wrong_field_count": 2}


def test_missing_required_column_names_file_and_column():
    with pytest.raises(SourceError) as exc:
        list(iter_file_chunks(BAD / "missing_column.csv", columns=["order_id", "customer_id"]))
    assert exc.value.file == "missing_column.csv"
    assert exc.value.column == "customer_id"
    assert "missing_column.csv" in str(exc.value) and "customer_id" in str(exc.value)


def test_invalid_utf8_only_flags_the_rows_with_bad_bytes():
    df, report = _read("invalid_utf8.csv")
    assert len(df) == 3
    assert df["_parse_error"].tolist() == [None, "invalid_utf8", None]
    assert df.loc[1, "customer_id"] == "S\ufffdo Paulo"  # decoded with replacement, fields kept
    assert df["_raw_line"].isna().all()
    assert df["status"].tolist() == ["entregue"] * 3
    assert report.parse_errors == {"invalid_utf8": 1}


def test_empty_file_is_an_error_naming_the_file():
    with pytest.raises(SourceError, match="empty file") as exc:
        list(iter_file_chunks(BAD / "empty.csv"))
    assert exc.value.file == "empty.csv"


def test_header_only_file_gives_no_rows_and_no_error():
    chunks = list(iter_file_chunks(BAD / "header_only.csv", columns=["order_id", "status"]))
    assert chunks == []
    df = read_file(BAD / "header_only.csv", columns=["order_id", "status"])
    assert len(df) == 0 and {"order_id", "status", "_source_row"} <= set(df.columns)


def test_truncated_gzip_is_an_error_naming_the_file():
    with pytest.raises(SourceError, match="truncated or corrupt gzip") as exc:
        for _ in iter_file_chunks(BAD / "truncated.csv.gz", chunk_rows=50):
            pass
    assert exc.value.file == "truncated.csv.gz"


def test_file_named_gz_that_is_not_gzip():
    with pytest.raises(SourceError, match="not a gzip file"):
        list(iter_file_chunks(BAD / "not_gzip.csv.gz"))


def test_missing_file():
    with pytest.raises(SourceError, match="file not found"):
        list(iter_file_chunks(BAD / "no_such_file.csv"))


def test_repeated_header_lines_are_flagged():
    df, report = _read("repeated_header.csv")
    assert df["_parse_error"].tolist() == [None, "repeated_header", None, "repeated_header"]
    assert df["_raw_line"].tolist() == [
        None,
        "order_id,customer_id,status",
        None,
        "order_id,customer_id,status",
    ]
    assert df.loc[[0, 2], "order_id"].tolist() == ["o1", "o2"]
    assert report.parse_errors == {"repeated_header": 2}


def test_unclosed_quote_does_not_swallow_the_rest_of_the_file():
    df, _ = _read("unclosed_quote.csv")
    assert df["_parse_error"].tolist() == ["wrong_field_count", None, None]
    assert df.loc[0, "_raw_line"] == 'o1,"c1,delivered'
    assert df["order_id"].tolist() == [None, "o2", "o3"]
    assert df["_source_row"].tolist() == [1, 2, 3]


def test_one_megabyte_field_survives(tmp_path):
    big = "x" * 1_000_000
    p = tmp_path / "big.csv"
    p.write_text(f'id,text\n1,"{big}"\n2,small\n', encoding="utf-8")
    df = read_file(p)
    assert len(df.loc[0, "text"]) == 1_000_000 and df.loc[1, "text"] == "small"
    assert df["_parse_error"].isna().all()


def test_field_over_the_csv_limit_becomes_a_bad_row_and_reading_goes_on(tmp_path, monkeypatch):
    p = tmp_path / "runaway.csv"
    p.write_text('id,text\n1,"' + "y" * 200 + "\n2,ok\n3,fine\n", encoding="utf-8")
    old = csv.field_size_limit()
    monkeypatch.setattr(files, "MAX_FIELD_BYTES", 50)
    csv.field_size_limit(50)
    try:
        df = read_file(p)
    finally:
        csv.field_size_limit(old)
    assert df["_parse_error"].tolist() == ["wrong_field_count", None, None]
    assert df["id"].tolist() == [None, "2", "3"]


def test_bom_crlf_semicolon_na_and_leading_zeros():
    report = ReadReport("x")
    df = read_file(BAD / "bom_crlf_semicolon.csv", options=CsvOptions(delimiter=";"), report=report)
    assert list(df.columns[:3]) == ["order_id", "zip", "note"]  # no BOM in the first name
    assert df["order_id"].tolist() == ["o1", "o2", "o3"]
    assert df["zip"].tolist() == ["01012", None, "00420"]
    assert df.loc[0, "note"] == "NA"  # text, not missing
    assert df.loc[1, "note"] == "line one\r\nline two; with ; inside"
    assert df.loc[2, "note"] == 'quoted "text"'
    assert df["_source_row"].tolist() == [1, 2, 3]
    assert df["_parse_error"].isna().all()
    assert report.blank_lines == 1


def test_declared_encoding_is_used_and_wrong_declaration_is_flagged():
    df = read_file(BAD / "latin1.csv", options=CsvOptions(encoding="latin-1"))
    assert df["city"].tolist() == ["São Paulo", "Brasília"] and df["_parse_error"].isna().all()
    df = read_file(BAD / "latin1.csv")  # read as UTF-8
    assert df["_parse_error"].tolist() == ["invalid_utf8", "invalid_utf8"]
    df = read_file(BAD / "latin1.csv", options=CsvOptions(encoding="cp1252"))
    assert df["city"].tolist() == ["São Paulo", "Brasília"]


def test_non_ascii_compatible_encoding_is_refused():
    with pytest.raises(SourceError, match="not ASCII-compatible"):
        CsvOptions(encoding="utf-16")
    with pytest.raises(SourceError, match="unknown encoding"):
        CsvOptions(encoding="klingon")


def test_chunks_are_bounded_and_rows_numbered_across_chunks(tmp_path):
    p = tmp_path / "ten.csv.gz"
    p.write_bytes(gzip.compress(b"a,b\n" + b"".join(b"%d,x%d\n" % (i, i) for i in range(10))))
    chunks = list(iter_file_chunks(p, chunk_rows=3))
    assert [len(c) for c in chunks] == [3, 3, 3, 1]
    rows = pd.concat(chunks)["_source_row"].tolist()
    assert rows == list(range(1, 11))
    assert set(pd.concat(chunks)["_source_file"]) == {"ten.csv.gz"}


def test_header_row_and_no_header(tmp_path):
    p = tmp_path / "titled.csv"
    p.write_text("Sales export 2024\na,b\n1,2\n", encoding="utf-8")
    df = read_file(p, options=CsvOptions(header=2))
    assert df[["a", "b"]].values.tolist() == [["1", "2"]]
    p2 = tmp_path / "noheader.tsv"
    p2.write_text("1\t2\n3\t4\n", encoding="utf-8")
    df = read_file(p2, options=CsvOptions(header=None, names=("a", "b"), delimiter="\t"))
    assert df["b"].tolist() == ["2", "4"] and df["_source_row"].tolist() == [1, 2]
    assert read_header(p2, options=CsvOptions(header=None, names=("a", "b"), delimiter="\t")) == ["a", "b"]


def test_parquet_is_read_as_text(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pa.table(
        {
            "zip": pa.array(["01012", None, "20231"]),
            "n": pa.array([1, None, 3], type=pa.int64()),
            "x": pa.array([1.5, 2.0, None]),
            "ts": pa.array(
                [pd.Timestamp("2017-07-09 21:57:05"), None, pd.Timestamp("2018-01-01")],
                type=pa.timestamp("us"),
            ),
            "flag": pa.array([True, False, None]),
            "empty": pa.array(["", "a", "b"]),
        }
    )
    p = tmp_path / "t.parquet"
    pq.write_table(t, p, row_group_size=2)
    chunks = list(iter_file_chunks(p, chunk_rows=2))
    assert [len(c) for c in chunks] == [2, 1]
    df = pd.concat(chunks, ignore_index=True)
    assert df["zip"].tolist() == ["01012", None, "20231"]
    assert df["n"].tolist() == ["1", None, "3"]
    assert df["x"].tolist() == ["1.5", "2", None]
    assert df["ts"].tolist() == ["2017-07-09 21:57:05", None, "2018-01-01 00:00:00"]
    assert df["flag"].tolist() == ["true", "false", None]
    assert df["empty"].tolist() == [None, "a", "b"]
    assert df["_source_row"].tolist() == [1, 2, 3]
    with pytest.raises(SourceError) as exc:
        list(iter_file_chunks(p, columns=["zip", "nope"]))
    assert exc.value.column == "nope" and exc.value.file == "t.parquet"


def test_unreadable_and_empty_parquet(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"this is not parquet at all")
    with pytest.raises(SourceError, match="not a readable Parquet file"):
        list(iter_file_chunks(bad))
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    with pytest.raises(SourceError, match="empty file"):
        list(iter_file_chunks(empty))


def test_unknown_extension_needs_a_format(tmp_path):
    p = tmp_path / "data.dat"
    p.write_text("a\n1\n")
    with pytest.raises(SourceError, match="set format"):
        list(iter_file_chunks(p))
    assert read_file(p, fmt="csv")["a"].tolist() == ["1"]


def test_finish_chunk_puts_the_raw_line_in_the_first_column():
    chunk = read_file(BAD / "wrong_field_count.csv")
    out = finish_chunk(
        chunk,
        {"order_id": chunk["order_id"], "customer_id": chunk["customer_id"], "status": "x", "quantity": None},
        "order_id",
    )
    assert out.loc[1, "order_id"] == "o2,c2,delivered,EXTRA"
    assert out.loc[1, ["customer_id", "status", "quantity"]].isna().all()
    assert out.loc[0].to_dict() == {
        "order_id": "o1",
        "customer_id": "c1",
        "status": "x",
        "quantity": None,
        "_source_file": "wrong_field_count.csv",
        "_source_row": 1,
        "_parse_error": None,
    }
    assert "_raw_line" not in out.columns


def test_gzip_of_nothing_is_an_empty_file(tmp_path):
    p = tmp_path / "nothing.csv.gz"
    p.write_bytes(gzip.compress(b""))
    with pytest.raises(SourceError, match="empty file") as exc:
        list(iter_file_chunks(p))
    assert exc.value.file == "nothing.csv.gz"
