"""Privacy treatment of staging columns (``canonical.Column.privacy``).

* ``pseudonym``: keyed HMAC-SHA256 pseudonym.  ``pseudonym(v, key)`` is the first 32 hex characters
  (128 bits) of ``HMAC-SHA256(key, utf8(v))``.  The input is one whole value (no concatenation, no
  per-column tag), so the encoding is trivially injective ("prefix-free") and the output is stable:
  the same customer id gives the same pseudonym in customers, orders, reviews and events, so foreign
  keys still join after pseudonymisation.  The output carries no prefix, so it reveals nothing about
  the column.  Without the key a pseudonym cannot be recomputed from a guessed id.
* ``mask``: free text keeps its words, but e-mails, URLs, CNPJ, CPF and phone numbers are replaced by
  ``[EMAIL]``, ``[URL]``, ``[CNPJ]``, ``[CPF]`` and ``[PHONE]``.  :func:`mask_text` (Python) and
  :func:`mask_sql` (DuckDB ``regexp_replace``, RE2) apply the same patterns in the same order; the
  patterns use only the syntax both engines read identically (no lookaround, ``[0-9]`` rather than
  ``\\d``, explicit whitespace classes, ASCII ``\\b``).

Two DuckDB implementations of the pseudonym are registered by :func:`register_privacy_functions`:

* ``ecom_pseudonym_udf(VARCHAR)``: a vectorised Arrow UDF (Python ``hashlib`` per value, one call per
  vector of rows).  Single-threaded under the GIL: about 1.5 us a value.
* ``ecom_pseudonym(VARCHAR)``: the same HMAC written as a TEMP SQL macro over DuckDB's built-in
  ``sha256`` (``sha256((K^opad) || sha256((K^ipad) || msg))``), which runs on every DuckDB thread.  It
  is what staging uses by default (``PSEUDONYM_FUNCTION``); tests check both agree with
  :func:`pseudonym` byte for byte.  The macro is TEMP: it lives on the connection, never in the
  database file, so the key never reaches disk through it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

import duckdb

from ecom_pipeline import config
from ecom_pipeline.local_keys import read_or_create_key

PSEUDONYM_HEX_CHARS = 32
KEY_ENV_VAR = "ECOM_PSEUDONYM_KEY"
KEY_FILE_NAME = ".pseudonym_key"

PSEUDONYM_SQL_FUNCTION = "ecom_pseudonym"  # TEMP macro, multi-threaded
PSEUDONYM_UDF_FUNCTION = "ecom_pseudonym_udf"  # vectorised Arrow UDF
PSEUDONYM_FUNCTION = PSEUDONYM_SQL_FUNCTION  # what staging calls
_BLOCK = 64  # SHA-256 block size


class PseudonymKeyError(RuntimeError):
    """No pseudonym key is configured where one must be."""


# ---------------------------------------------------------------------------------------------- pseudonyms
def _pads(key: bytes) -> tuple[bytes, bytes]:
    if not isinstance(key, (bytes, bytearray)) or len(key) == 0:
        raise ValueError("pseudonym key must be non-empty bytes")
    k = bytes(key)
    if len(k) > _BLOCK:  # RFC 2104: long keys are hashed first
        k = hashlib.sha256(k).digest()
    k = k.ljust(_BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in k), bytes(b ^ 0x5C for b in k)


def pseudonym(value: str, key: bytes) -> str:
    """HMAC-SHA256 pseudonym of ``value``: 32 lower-case hex characters."""

    return hmac.new(bytes(key), value.encode("utf-8"), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX_CHARS]


def _pseudonymiser(key: bytes):
    """A fast per-value pseudonym function (precomputed inner/outer hash states)."""
    ipad, opad = _pads(key)
    inner, outer = hashlib.sha256(ipad), hashlib.sha256(opad)
    icopy, ocopy = inner.copy, outer.copy

    def one(value: str) -> str:
        i = icopy()
        i.update(value.encode("utf-8"))
        o = ocopy()
        o.update(i.digest())
        return o.hexdigest()[:PSEUDONYM_HEX_CHARS]

    return one


def pseudonym_macro_sql(key: bytes, name: str = PSEUDONYM_SQL_FUNCTION) -> str:
    ipad, opad = _pads(key)
    return (
        f"CREATE OR REPLACE TEMP MACRO {name}(x) AS "
        f"left(sha256(unhex('{opad.hex()}') || unhex(sha256(unhex('{ipad.hex()}') || encode(x)))), "
        f"{PSEUDONYM_HEX_CHARS})"
    )


def register_privacy_functions(con: duckdb.DuckDBPyConnection, key: bytes) -> None:
    """Register ``ecom_pseudonym`` (SQL macro) and ``ecom_pseudonym_udf`` (Arrow UDF) on ``con``.

    Calling it again (e.g. with another key) replaces both.
    """
    import pyarrow as pa

    one = _pseudonymiser(key)

    def _udf(values):  # values: pyarrow (Chunked)Array of strings, one DuckDB vector
        return pa.array([None if v is None else one(v) for v in values.to_pylist()], pa.string())

    try:
        con.remove_function(PSEUDONYM_UDF_FUNCTION)
    except duckdb.InvalidInputException:  # not registered on this connection yet
        pass
    con.create_function(
        PSEUDONYM_UDF_FUNCTION,
        _udf,
        ["VARCHAR"],
        "VARCHAR",
        type="arrow",
        null_handling="special",
        side_effects=False,
    )
    con.execute(pseudonym_macro_sql(key))


# ---------------------------------------------------------------------------------------------- masking
_WS = r" \t\n\r\f\v"
# (placeholder, pattern) in the order they are applied.  Earlier replacements contain no digits or
# '@', so later patterns never see inside them.
MASK_RULES: tuple[tuple[str, str], ...] = (
    ("[EMAIL]", r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
    ("[URL]", r"(?i:https?://|ftp://|www\.)[^" + _WS + r"<>\"']+"),
    # CNPJ: 14 digits, 12.345.678/0001-95 or bare (punctuation optional piecewise).
    ("[CNPJ]", r"\b[0-9]{2}\.?[0-9]{3}\.?[0-9]{3}/?[0-9]{4}-?[0-9]{2}\b"),
    # CPF: 123.456.789-09, 123456789-09, or 11 bare digits that are not shaped like a Brazilian
    # mobile number (DDD 11-99 followed by 9): those are masked as [PHONE] below.
    (
        "[CPF]",
        (
            r"\b[0-9]{3}\.[0-9]{3}\.[0-9]{3}-[0-9]{2}\b|\b[0-9]{9}-[0-9]{2}\b"
            r"|\b(?:0[0-9]{10}|[0-9]0[0-9]{9}|[0-9]{2}[0-8][0-9]{8})\b"
        ),
    ),
    (
        "[PHONE]",
        "|".join(
            [
                # international: +55 11 91234-5678, +1 415-555-0100, +5511912345678, +55 (11) 91234-5678
                r"\+[0-9]{1,3}(?:[ .-]?\(?[0-9]{1,5}\)?){2,5}",
                # area code in parentheses: (11) 91234-5678, (11)3123-4567, (415) 555-0100
                r"\([0-9]{2,3}\)[ .-]?9?[0-9]{3,4}[ .-]?[0-9]{4}\b",
                # Brazilian with DDD: 11 91234-5678, 11 3123-4567, 1191234-5678
                r"\b[0-9]{2}[ .-]?9?[0-9]{4}-[0-9]{4}\b",
                # Brazilian mobile without DDD: 91234-5678
                r"\b9[0-9]{4}-[0-9]{4}\b",
                # North American: 415-555-0100, 415.555.0100
                r"\b[0-9]{3}[ .-][0-9]{3}[ .-][0-9]{4}\b",
                # bare Brazilian mobile: 11912345678
                r"\b[1-9]{2}9[0-9]{8}\b",
            ]
        ),
    ),
)

_COMPILED = tuple((placeholder, re.compile(pattern, re.ASCII)) for placeholder, pattern in MASK_RULES)


def mask_text(text: str | None) -> str | None:
    """Replace e-mails, URLs, CNPJ, CPF and phone numbers in ``text`` by placeholders."""
    if text is None:
        return None
    for placeholder, rx in _COMPILED:
        text = rx.sub(placeholder, text)
    return text


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def mask_sql(expr: str) -> str:
    """DuckDB SQL expression that masks the VARCHAR ``expr`` exactly like :func:`mask_text`."""
    out = expr
    for placeholder, pattern in MASK_RULES:
        out = f"regexp_replace({out}, {_sql_str(pattern)}, {_sql_str(placeholder)}, 'g')"
    return out


# ---------------------------------------------------------------------------------------------- the key
def resolve_pseudonym_key(env: str, data_root: Path) -> tuple[bytes, str]:
    """Return ``(key, warning)``; ``warning`` is "" when the key came from ``ECOM_PSEUDONYM_KEY``.

    * ``ECOM_PSEUDONYM_KEY`` set (non-blank): its UTF-8 bytes are the key.
    * else, in env ``local``: a random key is generated once into ``data_root/.pseudonym_key``
      (mode 0600) and reused on later calls; the warning says so (pseudonyms change if it is lost).
    * else (``docker``, ``prod``...): :class:`PseudonymKeyError`; a deployment must set the key, a
      generated one inside a container would silently change every pseudonym on redeploy.
    """
    value = config.env(KEY_ENV_VAR)
    if value:
        warning = ""
        if len(value) < 16:
            warning = f"{KEY_ENV_VAR} is short ({len(value)} characters); use at least 32 random characters"
        return value.encode("utf-8"), warning
    if env != "local":
        raise PseudonymKeyError(
            f"{KEY_ENV_VAR} is not set. In environment {env!r} the pseudonym key must be provided "
            f"(e.g. `export {KEY_ENV_VAR}=$(python -c 'import secrets; print(secrets.token_hex(32))')` "
            "or a secret in docker compose / Kubernetes); it is only generated automatically with "
            "ECOM_ENV=local."
        )
    path = Path(data_root) / KEY_FILE_NAME
    try:
        value, created = read_or_create_key(path)
    except ValueError as exc:
        raise PseudonymKeyError(f"pseudonym {exc}") from exc
    what = "generated a new" if created else "using the"
    warning = (
        f"{KEY_ENV_VAR} is not set: {what} local pseudonym key in {path} (mode 0600). Keep it: "
        "pseudonyms (and joins with earlier runs) change if it is lost. Set the variable outside local runs."
    )
    return value.encode("utf-8"), warning
