"""Pseudonyms (Python, SQL macro, Arrow UDF agree), masking (Python and SQL agree), key resolution."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat

import duckdb
import pytest

from ecom_pipeline.cleaning.privacy import (
    KEY_ENV_VAR,
    PSEUDONYM_SQL_FUNCTION,
    PSEUDONYM_UDF_FUNCTION,
    PseudonymKeyError,
    mask_sql,
    mask_text,
    pseudonym,
    register_privacy_functions,
    resolve_pseudonym_key,
)

KEY = b"unit-test-pseudonym-key-0123456789"

# (text, expected) shared by the Python and the SQL masker.
MASK_CASES = [
    ("mail me at joao.silva+loja@exemplo.com.br today", "mail me at [EMAIL] today"),
    ("Contato: ANA_2@Example.ORG.", "Contato: [EMAIL]."),
    ("veja https://loja.example.com/p?id=1&x=2 e www.loja.com.br", "veja [URL] e [URL]"),
    ("HTTP://EXAMPLE.COM/A", "[URL]"),
    ("user@host.com/http://a.b", "[EMAIL]/[URL]"),
    ("CNPJ 12.345.678/0001-95 e 12345678000195", "CNPJ [CNPJ] e [CNPJ]"),
    ("CPF 123.456.789-09", "CPF [CPF]"),
    ("cpf 12345678909 ou 123456789-09", "cpf [CPF] ou [CPF]"),
    ("ligue (11) 91234-5678", "ligue [PHONE]"),
    ("ligue (11)3123-4567!", "ligue [PHONE]!"),
    ("+55 11 91234-5678", "[PHONE]"),
    ("+55 (11) 91234-5678 amanhã", "[PHONE] amanhã"),
    ("+5511912345678", "[PHONE]"),
    ("whatsapp 11912345678", "whatsapp [PHONE]"),
    ("tel 11 3123-4567 ou 91234-5678", "tel [PHONE] ou [PHONE]"),
    ("call +1 415-555-0100 now", "call [PHONE] now"),
    ("(415) 555-0100 / 415.555.0100", "[PHONE] / [PHONE]"),
    ("+44 20 7946 0958", "[PHONE]"),
    # things that must stay
    ("preço R$ 1.234,56 em 2023-2024, pedido 12345, CEP 01310-100", None),
    ("nota 10/10, chegou em 3 dias, produto ótimo!", None),
    ("bla@x sem domínio", None),
    ("", None),
    ("ÉÉ123.456.789-09éé", "ÉÉ[CPF]éé"),
]


@pytest.mark.parametrize("text,expected", MASK_CASES)
def test_mask_text_python_and_sql_agree(text, expected):
    expected = text if expected is None else expected
    assert mask_text(text) == expected
    con = duckdb.connect()
    assert con.execute(f"SELECT {mask_sql('?')}", [text]).fetchall() == [(expected,)]


def test_mask_null_and_vectorised_sql():
    assert mask_text(None) is None
    con = duckdb.connect()
    texts = [t for t, _ in MASK_CASES] + [None]
    got = con.execute(f"SELECT {mask_sql('t')} FROM unnest(?) AS u(t)", [texts]).fetchall()
    assert [g for (g,) in got] == [mask_text(t) for t in texts]


def test_pseudonym_is_hmac_sha256_truncated():
    expected = hmac.new(KEY, b"cust-1", hashlib.sha256).hexdigest()[:32]
    assert pseudonym("cust-1", KEY) == expected
    assert len(expected) == 32 and pseudonym("cust-1", KEY) != pseudonym("cust-1", KEY + b"x")
    assert pseudonym("cust-1", KEY) != pseudonym("cust-2", KEY)


@pytest.mark.parametrize("key", [KEY, b"k", b"x" * 64, b"long key " * 20])
def test_sql_macro_and_arrow_udf_agree_with_python(key):
    con = duckdb.connect()
    register_privacy_functions(con, key)
    values = ["cust-1", "", "São Paulo ç", "a" * 5000, "josé@example.com", None] + [
        f"id{i}" for i in range(5000)
    ]
    for fn in (PSEUDONYM_SQL_FUNCTION, PSEUDONYM_UDF_FUNCTION):
        got = [
            g
            for (g,) in con.execute(
                f"SELECT {fn}(v) FROM unnest(?) WITH ORDINALITY AS u(v, i) ORDER BY i", [values]
            ).fetchall()
        ]
        assert got == [None if v is None else pseudonym(v, key) for v in values], fn


def test_register_twice_replaces_the_key():
    con = duckdb.connect()
    register_privacy_functions(con, b"one")
    register_privacy_functions(con, b"two")
    assert con.execute(f"SELECT {PSEUDONYM_SQL_FUNCTION}('x'), {PSEUDONYM_UDF_FUNCTION}('x')").fetchall() == [
        (pseudonym("x", b"two"), pseudonym("x", b"two"))
    ]


def test_macro_is_temporary(tmp_path):
    path = str(tmp_path / "w.duckdb")
    con = duckdb.connect(path)
    register_privacy_functions(con, KEY)
    con.execute("CREATE TABLE t AS SELECT 1 AS x")
    con.close()
    con = duckdb.connect(path)
    assert con.execute(
        "SELECT count(*) FROM duckdb_functions() WHERE function_name = ?", [PSEUDONYM_SQL_FUNCTION]
    ).fetchall() == [(0,)]
    assert KEY.hex() not in (tmp_path / "w.duckdb").read_bytes().hex()


def test_empty_key_rejected():
    with pytest.raises(ValueError):
        register_privacy_functions(duckdb.connect(), b"")


# ------------------------------------------------------------------------------------------ key resolution
def test_key_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV_VAR, "  an-env-provided-key-of-enough-length  ")
    key, warning = resolve_pseudonym_key("prod", tmp_path)
    assert key == b"an-env-provided-key-of-enough-length" and warning == ""
    assert not (tmp_path / ".pseudonym_key").exists()
    monkeypatch.setenv(KEY_ENV_VAR, "short")
    assert "short" in resolve_pseudonym_key("prod", tmp_path)[1]


def test_local_key_file_generated_once_with_mode_0600(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV_VAR, raising=False)
    root = tmp_path / "data"
    key1, warning1 = resolve_pseudonym_key("local", root)
    path = root / ".pseudonym_key"
    assert path.exists() and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(key1) == 64 and "generated" in warning1 and KEY_ENV_VAR in warning1
    key2, warning2 = resolve_pseudonym_key("local", root)
    assert key2 == key1 and "using the" in warning2
    os.chmod(path, 0o644)  # a key file someone loosened is tightened again
    assert resolve_pseudonym_key("local", root)[0] == key1
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


@pytest.mark.parametrize("env", ["docker", "prod"])
def test_missing_key_outside_local_is_an_error(tmp_path, monkeypatch, env):
    monkeypatch.delenv(KEY_ENV_VAR, raising=False)
    with pytest.raises(PseudonymKeyError, match=KEY_ENV_VAR):
        resolve_pseudonym_key(env, tmp_path)
    assert not (tmp_path / ".pseudonym_key").exists()
