"""The inbox: raw files a shop drops into ``<data_root>/inbox/`` become a daily partition and an ingest run.

Flow (each step is idempotent, so a crash anywhere is repaired by re-running it):

0. Only a file-based source (``olist``, ``mapped``) takes deliveries: with any other source the sensor
   skips, says so, and leaves the files where they are.
1. ``inbox_sensor`` (every 30 s) looks at the top level of the inbox.  Each entry is validated: a plain
   file name (no path separators, no ``..``, no hidden or control characters, an allowed extension), a
   regular file (symlinks are refused, whatever they point to), whose resolved path is inside the inbox,
   not empty, not modified in the last ``settle_seconds`` (still being copied), and fitting the source's
   layout (:func:`check_layout`: a file name the source reads, a header with the columns it takes from
   that file; docs/deployment.md lists the names per source).  Invalid entries are
   moved to ``inbox/rejected/`` with a ``.reason`` note; files whose SHA-256 is already in the sensor's
   cursor are moved to ``inbox/duplicates/``.  New files are moved to ``inbox/processed/<day>/`` where
   ``<day>`` is the delivery day (a ``YYYY-MM-DD`` or ``YYYYMMDD`` token in the name, else the file's
   modification day, UTC), and one run of ``inbox_ingest`` is requested per day with
   ``run_key = inbox:<day>:<hash of the batch>`` (so a re-evaluated tick never launches it twice) and the
   file names in the run tags.
2. ``inbox/deliveries`` (daily partitioned, the ``inbox_ingest`` job) records the day's files in
   ``meta.inbox_deliveries`` and publishes them into ``<data_root>/landing/`` (date token stripped, newest
   delivery of a file wins, atomic replace): the landing folder is the current state of the delivered data
   set, i.e. what a file-based source (olist / mapped) reads.  Backfilling a day re-publishes its archive,
   each file as its newest archived version (a later day's delivery is never replaced by an older one), so
   the landing folder and ``meta.inbox_deliveries`` are the same whatever order or how often days run.
3. ``ingest_after_inbox`` (run-status sensor, running by default) launches the unpartitioned ``ingest``
   job (full atomic reload of raw + staging) after each successful ``inbox_ingest`` run, pointing a
   file-based source at the landing folder.

   Opt-in instead (files that hold each day's new and corrected rows, mapped source):
   ``daily_partition_after_inbox`` launches ``daily_ingest`` (asset ``inbox/new_partitions``): every archived
   day not staged yet (``publish_partition``) is appended to raw and merged into staging by key, then
   ``features_after_daily_ingest`` (automation/jobs.py) runs the incremental ``daily_refresh``.  The
   partitioned ``inbox/daily_partition_ingest`` stages one chosen day (backfills).
"""

import fnmatch
import hashlib
import json
import os
import re
import shutil
import stat
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg

from ecom_pipeline.automation.executors import short_steps_executor, writer_tag
from ecom_pipeline.automation.partitions import INBOX_PARTITIONS, INBOX_START_DATE
from ecom_pipeline.config import env
from ecom_pipeline.paths import DataPaths
from ecom_pipeline.resources import PathsResource, PrivacyResource, SourceResource, WarehouseResource
from ecom_pipeline.routing import WAREHOUSE_OP_TAGS, WAREHOUSE_POOL
from ecom_pipeline.sources.online_events import COLUMNS as ONLINE_EVENT_COLUMNS
from ecom_pipeline.sources.online_events import PREFIX as ONLINE_EVENTS_PREFIX

ALLOWED_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt", ".parquet", ".pq")
IN_PROGRESS_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".filepart")
SUBDIRS = ("processed", "rejected", "duplicates")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+~-]{0,199}$")
_DAY_RE = re.compile(r"(?<![0-9])(\d{4})-?(\d{2})-?(\d{2})(?![0-9])")
_DAY_TOKEN_RE = re.compile(r"[_-]?(?<![0-9])\d{4}-?\d{2}-?\d{2}(?![0-9])")
_COPY_TOKEN_RE = re.compile(r"~[0-9a-f]{8}")
MAX_CURSOR_HASHES = 5000
INBOX_TABLE = "meta.inbox_deliveries"


def inbox_dir(data_root: str | Path) -> Path:
    return DataPaths(Path(data_root)).inbox


def landing_dir(data_root: str | Path) -> Path:
    return DataPaths(Path(data_root)).landing


def validate_name(name: str) -> str | None:
    """Why ``name`` is not acceptable as an inbox file name, or ``None`` when it is."""
    if not name or name in (".", ".."):
        return "empty or dot name"
    if "/" in name or "\\" in name or "\x00" in name:
        return "path separator in name (path traversal)"
    if ".." in name:
        return "'..' in name (path traversal)"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "control character in name"
    if name.startswith("."):
        return "hidden file"
    if not _NAME_RE.match(name):
        return "name has characters outside [A-Za-z0-9_.+~-] or is too long"
    if not name.lower().endswith(ALLOWED_SUFFIXES):
        return f"extension not one of {', '.join(ALLOWED_SUFFIXES)}"
    return None


def safe_inbox_path(inbox: Path, name: str) -> Path:
    """The path of ``name`` inside ``inbox``; ``ValueError`` for anything that could escape it."""
    reason = validate_name(name)
    if reason:
        raise ValueError(f"{name!r}: {reason}")
    path = inbox / name
    if path.is_symlink():
        raise ValueError(f"{name!r}: symlinks are refused")
    if path.resolve().parent != inbox.resolve():
        raise ValueError(f"{name!r}: resolves outside the inbox")
    return path


def delivery_day(name: str, mtime: float) -> str:
    """The partition key: a valid date token in the name, else the UTC day of ``mtime``."""
    for m in _DAY_RE.finditer(name):
        try:
            return date(int(m.group(1)), int(m.group(2)), int(m.group(3))).isoformat()
        except ValueError:
            continue
    return datetime.fromtimestamp(mtime, tz=UTC).date().isoformat()


def landing_name(name: str) -> str:
    """The file name in the landing folder: date token and archive copy token removed."""
    stem, suffix = _split_suffix(name)
    stem = _COPY_TOKEN_RE.sub("", _DAY_TOKEN_RE.sub("", stem)).strip("_-.") or "delivery"
    return stem + suffix


def _split_suffix(name: str) -> tuple[str, str]:
    lower = name.lower()
    for suffix in sorted(ALLOWED_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    return name, ""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _free_target(folder: Path, name: str, sha: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    if target.exists() or target.is_symlink():
        stem, suffix = _split_suffix(name)
        target = folder / f"{stem}~{sha[:8]}{suffix}"
        n = 1
        while target.exists():
            target = folder / f"{stem}~{sha[:8]}.{n}{suffix}"
            n += 1
    return target


def _archived_files(folder: Path) -> list[Path]:
    """The valid regular files of one ``processed/<day>/`` folder, oldest first (mtime, then name)."""
    entries = [
        p for p in folder.iterdir() if not p.is_symlink() and p.is_file() and validate_name(p.name) is None
    ]
    return sorted(entries, key=lambda p: (p.stat().st_mtime, p.name))


def newest_archived(processed: Path) -> dict[str, Path]:
    """landing name -> the archived file that is its newest delivery (latest day, then mtime, then name)."""
    newest: dict[str, Path] = {}
    if not processed.is_dir():
        return newest
    for day_dir in sorted(p for p in processed.iterdir() if p.is_dir() and not p.is_symlink()):
        for path in _archived_files(day_dir):
            newest[landing_name(path.name)] = path
    return newest


def partition_dir(data_root: str | Path, day: str) -> Path:
    return DataPaths(Path(data_root)).partition(day)


def publish_partition(data_root: str | Path, day: str) -> Path:
    """``<data_root>/partitions/<day>/``: that day's archived deliveries (``inbox/processed/<day>/``) under
    their landing names, the newest delivery of a name that day winning: what the daily partitioned ingest
    reads (the day's new and corrected rows; the landing folder is the current state of everything)."""
    folder = DataPaths(Path(data_root)).inbox_processed / day
    target = partition_dir(data_root, day)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    if folder.is_dir():
        for path in _archived_files(folder):  # oldest first: a later copy of the same name replaces it
            if not is_online_events(path.name):
                shutil.copyfile(path, target / landing_name(path.name))
    return target


# ------------------------------------------------------------------------------------- expected layout

# The columns OlistSource (sources/olist.py) reads from each Olist file; a delivery under one of these names
# must have at least these in its header.  A test checks them against the real Olist sample's headers.
OLIST_COLUMNS: dict[str, tuple[str, ...]] = {
    "olist_orders_dataset": (
        "order_id",
        "customer_id",
        "order_status",
        "order_purchase_timestamp",
        "order_approved_at",
        "order_delivered_customer_date",
        "order_estimated_delivery_date",
    ),
    "olist_customers_dataset": (
        "customer_id",
        "customer_unique_id",
        "customer_zip_code_prefix",
        "customer_city",
        "customer_state",
    ),
    "olist_order_items_dataset": (
        "order_id",
        "order_item_id",
        "product_id",
        "seller_id",
        "price",
        "freight_value",
    ),
    "olist_order_payments_dataset": (
        "order_id",
        "payment_sequential",
        "payment_type",
        "payment_installments",
        "payment_value",
    ),
    "olist_order_reviews_dataset": (
        "review_id",
        "order_id",
        "review_score",
        "review_comment_title",
        "review_comment_message",
        "review_creation_date",
    ),
    "olist_geolocation_dataset": (
        "geolocation_zip_code_prefix",
        "geolocation_lat",
        "geolocation_lng",
        "geolocation_city",
        "geolocation_state",
    ),
    "olist_products_dataset": (
        "product_id",
        "product_category_name",
        "product_name_lenght",
        "product_description_lenght",
        "product_photos_qty",
        "product_weight_g",
        "product_length_cm",
        "product_height_cm",
        "product_width_cm",
    ),
    "olist_sellers_dataset": ("seller_id", "seller_zip_code_prefix", "seller_city", "seller_state"),
    "product_category_name_translation": ("product_category_name", "product_category_name_english"),
}
FILE_SOURCES = ("olist", "mapped")


def expected_files(kind: str, mapping: str | Path | None = None) -> dict[str, str]:
    """landing name pattern -> what it feeds, for a file-based source (the names the docs list)."""
    if kind == "olist":
        return {f"{stem}.csv (or .csv.gz)": stem for stem in OLIST_COLUMNS}
    if kind == "mapped":
        return {
            pattern: ", ".join(tables)
            for pattern, (tables, _cols, _fmt, _opts) in _mapped_layout(mapping).items()
        }
    return {}


def _mapped_layout(mapping: str | Path | None) -> dict[str, tuple[list[str], list[str], str | None, dict]]:
    """file pattern -> (tables, source columns, format, csv options) from a mapping file.  Only the parts
    that say what a delivered file must look like: the mapping itself is validated by the ingest."""
    import yaml

    from ecom_pipeline.sources.mapped import TableMapping

    if not mapping:
        raise ValueError("ECOM_DATA_SOURCE=mapped needs ECOM_MAPPING: without it no file name is expected")
    doc = yaml.safe_load(Path(mapping).read_text(encoding="utf-8")) or {}
    top_csv = doc.get("csv") or {}
    layout: dict[str, tuple[list[str], list[str], str | None, dict]] = {}
    for table, spec in (doc.get("tables") or {}).items():
        pattern = Path(str(spec.get("file", ""))).name
        cols = TableMapping(
            table,
            pattern,
            [],
            [],
            spec.get("format") or "",
            None,
            dict(spec.get("columns") or {}),
            {},
            dict(spec.get("derive") or {}),
        ).source_columns
        csv_opts = {**top_csv, **(spec.get("csv") or {})}
        tables, known, fmt, opts = layout.get(pattern, ([], [], spec.get("format"), csv_opts))
        layout[pattern] = (tables + [table], list(dict.fromkeys(known + cols)), fmt, opts)
    return layout


def is_online_events(name: str) -> bool:
    """A file of session events written by the serving app (read from the archive by every ingest)."""
    return name.startswith(ONLINE_EVENTS_PREFIX)


def check_layout(path: Path, landing: str, kind: str, mapping: str | Path | None = None) -> str | None:
    """Why ``path`` (to be published as ``landing``) does not fit the source's expected layout, or None.

    The name must be one the source reads and the header must hold every column the source takes from
    it; the file is read with the source's own reader (header only: single bad rows are the ingest's
    business, they go to quarantine)."""
    from ecom_pipeline.sources.base import SourceError
    from ecom_pipeline.sources.files import CsvOptions, default_delimiter, require_columns

    stem, suffix = _split_suffix(landing)
    if is_online_events(path.name):  # the serving app's session events: the same layout whatever the source
        columns, fmt, options = list(ONLINE_EVENT_COLUMNS), "csv", CsvOptions()
    elif kind == "olist":
        if stem not in OLIST_COLUMNS or suffix.lower() not in (".csv", ".csv.gz"):
            return f"the olist source reads no file called {landing!r}; it reads " + ", ".join(
                f"{s}.csv[.gz]" for s in OLIST_COLUMNS
            )
        columns, fmt, options = OLIST_COLUMNS[stem], "csv", CsvOptions()
    elif kind == "mapped":
        layout = _mapped_layout(mapping)
        match = next((p for p in layout if fnmatch.fnmatchcase(landing, p)), None)
        if match is None:
            return (
                f"the mapping {mapping} reads no file called {landing!r}; "
                f"it reads {', '.join(sorted(layout))}"
            )
        _tables, columns, fmt, opts = layout[match]
        options = CsvOptions(
            delimiter=str(opts.get("delimiter", default_delimiter(path))),
            encoding=str(opts.get("encoding", "utf-8")),
            header=opts.get("header", 1) or None,
            names=tuple(opts["names"]) if opts.get("names") else None,
        )
    else:
        return f"the {kind!r} source takes no files"
    try:
        require_columns(path, columns, fmt=fmt, options=options, label=landing)
    except SourceError as exc:
        return f"does not fit the {kind} layout: {exc}"
    except (OSError, ValueError) as exc:  # unreadable bytes, a broken archive
        return f"unreadable as {fmt or 'a data file'}: {type(exc).__name__}: {exc}"
    return None


@dataclass
class InboxScan:
    accepted: dict[str, list[dict]] = field(default_factory=dict)  # day -> [{name, sha256, bytes}]
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    duplicates: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # still being written


def process_inbox(
    inbox: Path,
    seen: dict[str, str],
    *,
    settle_seconds: float = 10.0,
    now: float | None = None,
    today: date | None = None,
    layout_check=None,
    only=None,
) -> InboxScan:
    """Validate, deduplicate and move every top-level entry of ``inbox``; ``seen`` (sha → where) is updated.

    ``layout_check(path, landing_name)`` returns why a file does not fit the source's layout (or None);
    a file that does not fit is rejected here, so it never reaches ``processed/`` or ``landing/``.

    ``only(name)``: when given, entries it refuses are left where they are (not scanned at all).

    Files are moved (rename within the inbox folder, so atomic), never copied or deleted.
    """
    now = time.time() if now is None else now
    today = today or datetime.fromtimestamp(now, tz=UTC).date()
    last_day = today.toordinal() + 1
    scan = InboxScan()
    if not inbox.is_dir():
        return scan
    root = inbox.resolve()
    for entry in sorted(os.scandir(inbox), key=lambda e: e.name):
        name = entry.name
        if name in SUBDIRS and entry.is_dir(follow_symlinks=False):
            continue
        if only is not None and not only(name):
            continue
        st = entry.stat(follow_symlinks=False)
        if name.lower().endswith(IN_PROGRESS_SUFFIXES) and stat.S_ISREG(st.st_mode):
            scan.waiting.append(name)
            continue
        reason = validate_name(name)
        if reason is None and stat.S_ISLNK(st.st_mode):
            reason = "symlink refused"
        elif reason is None and not stat.S_ISREG(st.st_mode):
            reason = "not a regular file"
        elif reason is None and Path(entry.path).resolve().parent != root:
            reason = "resolves outside the inbox"
        elif reason is None and st.st_size == 0:
            reason = "empty file"
        if reason is None and now - st.st_mtime < settle_seconds:
            scan.waiting.append(name)
            continue
        day = None
        if reason is None:
            day = delivery_day(name, st.st_mtime)
            if not (
                date.fromisoformat(INBOX_START_DATE).toordinal()
                <= date.fromisoformat(day).toordinal()
                <= last_day
            ):
                reason = f"delivery day {day} outside {INBOX_START_DATE}..{date.fromordinal(last_day)}"
        if reason is None and layout_check is not None:
            reason = layout_check(Path(entry.path), landing_name(name))
        if reason is not None:
            target = _free_target(
                inbox / "rejected", name if validate_name(name) is None else "invalid_name", "0" * 8
            )
            os.rename(entry.path, target)  # a symlink is moved as a link: its target is never touched
            target.with_name(target.name + ".reason").write_text(f"{name!r}: {reason}\n")
            scan.rejected.append((name, reason))
            continue
        sha = sha256_file(Path(entry.path))
        if sha in seen:
            os.rename(entry.path, _free_target(inbox / "duplicates", name, sha))
            scan.duplicates.append(name)
            continue
        target = _free_target(inbox / "processed" / day, name, sha)
        os.rename(entry.path, target)
        seen[sha] = f"{day}/{target.name}"
        scan.accepted.setdefault(day, []).append({"name": target.name, "sha256": sha, "bytes": st.st_size})
    while len(seen) > MAX_CURSOR_HASHES:
        seen.pop(next(iter(seen)))
    return scan


def _load_cursor(cursor: str | None) -> dict:
    if not cursor:
        return {"hashes": {}}
    try:
        data = json.loads(cursor)
    except json.JSONDecodeError:
        return {"hashes": {}}
    return data if isinstance(data.get("hashes"), dict) else {"hashes": {}}


# ----------------------------------------------------------------------------------------------- asset


@dg.asset(
    key=dg.AssetKey(["inbox", "deliveries"]),
    group_name="inbox",
    partitions_def=INBOX_PARTITIONS,
    pool=WAREHOUSE_POOL,
    op_tags=WAREHOUSE_OP_TAGS,
    kinds={"duckdb", "file"},
    owners=["team:mlops"],
    description="Files delivered to the inbox on one day (partition = delivery day, UTC): recorded in "
    "`meta.inbox_deliveries` and published into `<data_root>/landing/`, the folder a file-based source "
    "reads. Backfilling a day re-publishes that day's archived files from `inbox/processed/<day>/`.",
)
def inbox_deliveries(
    context: dg.AssetExecutionContext,
    source: SourceResource,
    paths: PathsResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    day = context.partition_key
    folder = paths.layout.inbox_processed / day
    landing = paths.landing
    files = []
    superseded, refused = [], []
    newest = newest_archived(paths.layout.inbox_processed)
    if folder.is_dir():
        for path in _archived_files(folder):
            if is_online_events(path.name):  # read from the archive by every ingest, never landed
                continue
            # Publish the newest archived version of this landing file, whichever day that is: re-running or
            # backfilling an old day never replaces a later delivery, so the landing folder does not depend
            # on the order in which partitions run.
            published = newest[landing_name(path.name)]
            if published != path:
                superseded.append(f"{path.name} (newer: {published.parent.name}/{published.name})")
            target = landing / landing_name(path.name)
            # checked again here: an archive from before the sensor checked layouts, or a changed mapping,
            # must not replace a good landing file either
            reason = (
                check_layout(published, target.name, source.kind, source.mapping or None)
                if source.kind in FILE_SOURCES
                else None
            )
            if reason:
                refused.append(f"{published.parent.name}/{published.name}: {reason}")
                continue
            landing.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{context.run.run_id[:8]}.tmp")
            shutil.copyfile(published, tmp)
            os.replace(tmp, target)
            files.append(
                {
                    "day": day,
                    "file": path.name,
                    "landing_file": target.name,
                    "sha256": sha256_file(path),
                    "bytes": path.stat().st_size,
                    "delivered_at": datetime.fromtimestamp(path.stat().st_mtime, tz=UTC).replace(tzinfo=None),
                    "published_at": datetime.now(UTC).replace(tzinfo=None),
                    "run_id": context.run.run_id,
                }
            )
    with warehouse.connect() as con:
        con.execute(f"""CREATE TABLE IF NOT EXISTS {INBOX_TABLE} (day DATE, file VARCHAR,
            landing_file VARCHAR, sha256 VARCHAR, bytes BIGINT, delivered_at TIMESTAMP,
            published_at TIMESTAMP, run_id VARCHAR)""")
        con.execute(f"DELETE FROM {INBOX_TABLE} WHERE day = ?", [day])
        for f in files:
            con.execute(f"INSERT INTO {INBOX_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?)", list(f.values()))
    if not files:
        context.log.warning(f"no files delivered on {day} (nothing under {folder})")
    for note in superseded:
        context.log.info(f"landing keeps a later delivery: {note}")
    for note in refused:
        context.log.warning(f"not published (landing keeps its previous file): {note}")
    table = "\n".join(
        f"| {f['file']} | {f['landing_file']} | {f['bytes']:,} | {f['sha256'][:12]} |" for f in files
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(files),
            "files": len(files),
            "bytes": sum(f["bytes"] for f in files),
            "landing_dir": dg.MetadataValue.path(str(landing)),
            "superseded_by_later_delivery": len(superseded),
            "refused_layout": len(refused),
            "deliveries": dg.MetadataValue.md(
                "| file | landing file | bytes | sha256 |\n|---|---|---|---|\n" + table
                if files
                else f"no files delivered on {day}"
            ),
        }
    )


inbox_ingest_job = dg.define_asset_job(
    "inbox_ingest",
    executor_def=short_steps_executor(),  # one short step: no step process to start (see executors.py)
    selection=dg.AssetSelection.keys(inbox_deliveries.key),
    partitions_def=INBOX_PARTITIONS,
    description="Record and publish one delivery day of the inbox (daily partition). On success the "
    "`ingest_after_inbox` sensor launches the full `ingest` reload of raw and staging.",
    tags={"ecom/stage": "ingest", **writer_tag()},
)


# --------------------------------------------------------------------------------------------- sensors


def settle_seconds() -> float:
    """How old a file must be before the sensor takes it (read per tick, not at import)."""
    return float(env("ECOM_INBOX_SETTLE_SECONDS"))


@dg.sensor(
    name="inbox_sensor",
    job=inbox_ingest_job,
    minimum_interval_seconds=30,
    description="Watches <data_root>/inbox/: validates names (no traversal, no symlinks, nothing outside the "
    "inbox), deduplicates by SHA-256 (cursor), moves files to processed/<day>/ and launches inbox_ingest "
    "for that day.",
)
def inbox_sensor(
    context: dg.SensorEvaluationContext, source: SourceResource, paths: PathsResource
) -> dg.SensorResult:
    inbox = paths.inbox
    inbox.mkdir(parents=True, exist_ok=True)
    only = None
    if source.kind not in FILE_SOURCES:
        # Delivered files are left where they are (nothing would ever read them); the serving app's
        # session-event files are archived all the same: every ingest reads them, whatever the source.
        waiting = sorted(e.name for e in os.scandir(inbox) if e.name not in SUBDIRS)
        if not any(is_online_events(n) and not n.lower().endswith(IN_PROGRESS_SUFFIXES) for n in waiting):
            return dg.SensorResult(
                skip_reason=(
                    f"the configured source {source.kind!r} takes no files: set ECOM_DATA_SOURCE=olist or "
                    f"mapped (with ECOM_MAPPING) to ingest deliveries; {len(waiting)} file(s) "
                    f"left untouched in {inbox}"
                ),
                cursor=context.cursor,
            )
        only = is_online_events
    else:
        try:
            expected_files(source.kind, source.mapping or None)
        except (OSError, ValueError) as exc:  # no mapping, or one that cannot be read: nothing can be checked
            return dg.SensorResult(
                skip_reason=f"cannot tell which files the {source.kind} source takes: {exc}",
                cursor=context.cursor,
            )
    state = _load_cursor(context.cursor)
    scan = process_inbox(
        inbox,
        state["hashes"],
        settle_seconds=settle_seconds(),
        only=only,
        layout_check=lambda path, landing: check_layout(path, landing, source.kind, source.mapping or None),
    )
    for name, reason in scan.rejected:
        context.log.warning(f"inbox: rejected {name!r}: {reason}")
    for name in scan.duplicates:
        context.log.info(f"inbox: {name!r} has the content of an earlier delivery: moved to duplicates/")
    runs = []
    for day, files in sorted(scan.accepted.items()):
        batch = hashlib.sha256("".join(sorted(f["sha256"] for f in files)).encode()).hexdigest()[:16]
        runs.append(
            dg.RunRequest(
                run_key=f"inbox:{day}:{batch}",
                partition_key=day,
                tags={
                    "ecom/trigger": "inbox",
                    "ecom/inbox_day": day,
                    "ecom/inbox_files": ",".join(f["name"] for f in files)[:1000],
                },
            )
        )
    cursor = json.dumps(state, sort_keys=False)
    if runs:
        return dg.SensorResult(run_requests=runs, cursor=cursor)
    parts = [
        f"{len(scan.rejected)} rejected",
        f"{len(scan.duplicates)} duplicate(s)",
        f"{len(scan.waiting)} still being written",
    ]
    return dg.SensorResult(skip_reason=f"no new files in {inbox} ({', '.join(parts)})", cursor=cursor)


def _ingest_job():
    from ecom_pipeline.automation.jobs import ingest_job

    return ingest_job


# On by default: it only reacts to successful inbox_ingest runs, which exist only once someone started
# inbox_sensor (or backfilled the inbox), so starting inbox_sensor is the one action that turns the
# file-drop automation on.
@dg.run_status_sensor(
    name="ingest_after_inbox",
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[inbox_ingest_job],
    request_job=_ingest_job(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After a successful inbox_ingest run, launch the full ingest (raw + staging) reload; a "
    "file-based source (olist / mapped) reads the landing folder.",
)
def ingest_after_inbox(context: dg.RunStatusSensorContext, source: SourceResource, paths: PathsResource):
    run = context.dagster_run
    if run.job_name != inbox_ingest_job.name:
        return dg.SkipReason(f"run {run.run_id} is {run.job_name}, not {inbox_ingest_job.name}")
    run_config = {}
    if source.kind in FILE_SOURCES:
        # The whole source config, not just data_dir: run config for a resource replaces its configuration
        # (fields left out fall back to the class defaults, i.e. kind=synthetic), it does not merge.
        config = {name: getattr(source, name) for name in SourceResource.model_fields}
        run_config = {"resources": {"source": {"config": {**config, "data_dir": str(paths.landing)}}}}
    day = run.tags.get("dagster/partition", "")
    return dg.RunRequest(
        run_key=f"ingest-after-inbox:{run.run_id}",
        run_config=run_config,
        tags={"ecom/trigger": "inbox", "ecom/inbox_run": run.run_id, "ecom/inbox_day": day},
    )


# The daily partitioned ingest: for shops whose daily files are the day's new and corrected rows.  This asset
# stages one chosen day (backfills); the daily path is inbox/new_partitions below (every day not staged yet).
# Opt-in: start daily_partition_after_inbox and stop ingest_after_inbox (the full reload would replace raw
# with the landing folder, and load_raw_partition then refuses to append to that snapshot).
@dg.asset(
    key=dg.AssetKey(["inbox", "daily_partition_ingest"]),
    group_name="inbox",  # kept out of the unpartitioned jobs (ingest, daily_refresh, full_pipeline)
    partitions_def=INBOX_PARTITIONS,
    deps=[inbox_deliveries.key],
    pool=WAREHOUSE_POOL,
    op_tags=WAREHOUSE_OP_TAGS,
    kinds={"duckdb"},
    owners=["team:mlops"],
    description="One delivery day's files (new and corrected rows, mapped source) appended to raw as that "
    "day's load and merged into staging by key: late corrections update their key (recorded in "
    "`staging.change_log`), a re-delivered day changes nothing. Full rebuild: job "
    "`partition_staging_rebuild`. See docs/performance.md.",
)
def daily_partition_ingest(
    context: dg.AssetExecutionContext,
    source: SourceResource,
    privacy: PrivacyResource,
    warehouse: WarehouseResource,
    paths: PathsResource,
) -> dg.MaterializeResult:
    from ecom_pipeline.incremental.daily import COUNTS, ingest_day, record_day
    from ecom_pipeline.sources.mapped import MappedSource

    _require_mapped(source)
    day = context.partition_key
    src = MappedSource.for_delivery(source.mapping, publish_partition(paths.root, day))
    key = _pseudonym_key(context, privacy)
    digest = archived_day_digests(paths.layout.inbox_processed).get(day)
    with warehouse.connect() as con:
        load_id = f"{day}:{context.run.run_id}"
        done = ingest_day(con, src, day, load_id=load_id, pseudonym_key=key, chunk_rows=source.chunk_rows)
        if digest:  # the daily run (inbox/new_partitions) then knows this delivery is staged
            record_day(con, day, digest, load_id)
    table_md = "\n".join(
        f"| {t} | " + " | ".join(str(v[c]) for c in COUNTS) + " |" for t, v in done.rows.items()
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": done.total("raw"),
            "new_rows": done.total("new"),
            "changed_rows": done.total("changed"),
            "untouched_rows": done.total("untouched"),
            "quarantined_rows": done.total("quarantined"),
            # whom incremental scoring must recompute (staging_upsert.customers_with_new_activity)
            "customers_with_new_activity": len(done.customers),
            "tables_delivered": ", ".join(sorted(src.tables())),
            "by_table": dg.MetadataValue.md(
                "| table | raw | new | changed | untouched | quarantined |\n"
                "|---|---:|---:|---:|---:|---:|\n" + table_md
            ),
        }
    )


def _require_mapped(source: SourceResource) -> None:
    if source.kind != "mapped":
        raise dg.Failure(
            f"the daily partitioned ingest reads a mapped source's day files; the source is "
            f"{source.kind!r}: a snapshot source is reloaded in full (job `full_refresh`, schedule "
            "`daily_full_refresh`)",
            allow_retries=False,
        )


def _pseudonym_key(context: dg.AssetExecutionContext, privacy: PrivacyResource) -> bytes:
    key, warning = privacy.key()
    if warning:
        context.log.warning(warning)
    return key


_DAY_FOLDER_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def archived_day_digests(processed: Path) -> dict[str, str]:
    """Delivery day -> digest of the files the partitioned ingest reads from ``processed/<day>/`` (the
    session-event files, read by every ingest from the archive, left out)."""
    from ecom_pipeline.incremental.daily import day_digest

    out: dict[str, str] = {}
    if not processed.is_dir():
        return out
    for folder in sorted(p for p in processed.iterdir() if p.is_dir() and not p.is_symlink()):
        files = [p for p in _archived_files(folder) if not is_online_events(p.name)]
        if files and _DAY_FOLDER_RE.match(folder.name):
            out[folder.name] = day_digest(files)
    return out


# The daily path (job `daily_ingest`, schedule `daily_ingest_features`, sensor `daily_partition_after_inbox`):
# every delivered day not staged yet, in one unpartitioned step so the features run after it can follow in
# the same chain (see automation/jobs.py).
@dg.asset(
    key=dg.AssetKey(["inbox", "new_partitions"]),
    group_name="inbox",  # kept out of full_pipeline (the full rebuild reloads raw/staging instead)
    pool=WAREHOUSE_POOL,
    op_tags=WAREHOUSE_OP_TAGS,
    kinds={"duckdb"},
    owners=["team:mlops"],
    description="Every delivery day of the inbox archive that is not staged yet (new, or re-delivered with "
    "other files), in day order: appended to raw as that day's load and merged into staging by key. Days "
    "already staged are not read. The daily run's ingest; see docs/performance.md.",
)
def new_partitions(
    context: dg.AssetExecutionContext,
    source: SourceResource,
    privacy: PrivacyResource,
    warehouse: WarehouseResource,
    paths: PathsResource,
) -> dg.MaterializeResult:
    from ecom_pipeline.incremental.daily import ingest_pending_days, summary_markdown
    from ecom_pipeline.sources.mapped import MappedSource

    _require_mapped(source)
    key = _pseudonym_key(context, privacy)
    archive = archived_day_digests(paths.layout.inbox_processed)
    with warehouse.connect() as con:
        days = ingest_pending_days(
            con,
            archive,
            lambda day: MappedSource.for_delivery(source.mapping, publish_partition(paths.root, day)),
            run_id=context.run.run_id,
            pseudonym_key=key,
            chunk_rows=source.chunk_rows,
        )
    if not days:
        context.log.info(f"no pending delivery day in {paths.layout.inbox_processed}: staging unchanged")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": sum(d.total("raw") for d in days),
            "days_ingested": ", ".join(d.day for d in days) or "none",
            "days_untouched": len(archive) - len(days),
            "new_rows": sum(d.total("new") for d in days),
            "changed_rows": sum(d.total("changed") for d in days),
            "untouched_rows": sum(d.total("untouched") for d in days),
            "quarantined_rows": sum(d.total("quarantined") for d in days),
            "customers_with_new_activity": len({c for d in days for c in d.customers}),
            "by_day": dg.MetadataValue.md(summary_markdown(days)),
        }
    )


@dg.op(
    description="Full rebuild of staging from the partitioned raw loads, replayed in day order (after a "
    "mapping or cleaning-rule change)."
)
def rebuild_partitioned_staging(
    context: dg.OpExecutionContext,
    source: SourceResource,
    privacy: PrivacyResource,
    warehouse: WarehouseResource,
) -> None:
    from ecom_pipeline.cleaning.staging_upsert import rebuild_staging_from_partitions
    from ecom_pipeline.sources.mapped import MappedSource

    if source.kind != "mapped":
        raise dg.Failure(
            f"partitioned staging comes from a mapped source; the source is {source.kind!r}",
            allow_retries=False,
        )
    key, _warning = privacy.key()
    hints = MappedSource.hints_from_yaml(source.mapping)
    with warehouse.connect() as con:
        results = rebuild_staging_from_partitions(con, pseudonym_key=key, hints_for=lambda _t: hints)
    context.log.info(f"replayed {len(results)} partition loads")


@dg.job(
    name="partition_staging_rebuild",
    tags={"ecom/reload": "warehouse", **writer_tag()},
    description="Rebuild staging from the daily partitions' raw loads (daily_partition_ingest).",
)
def partition_staging_rebuild_job():
    rebuild_partitioned_staging()


DAILY_PARTITION_KEY = daily_partition_ingest.key
daily_partition_ingest_job = dg.define_asset_job(
    "daily_partition_ingest",
    selection=dg.AssetSelection.keys(DAILY_PARTITION_KEY),
    partitions_def=INBOX_PARTITIONS,
    tags={"ecom/reload": "warehouse", **writer_tag()},  # queued with the other raw + staging writers
    description="One delivery day appended to raw and merged into staging by key (mapped source).",
)


def _daily_ingest_job():
    from ecom_pipeline.automation.jobs import daily_ingest_job

    return daily_ingest_job


@dg.run_status_sensor(
    name="daily_partition_after_inbox",
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[inbox_ingest_job],
    request_job=_daily_ingest_job(),
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Opt-in replacement for ingest_after_inbox (mapped source whose day files hold the day's new "
    "and corrected rows): after a successful inbox_ingest run, launch the incremental daily path: "
    "daily_ingest (every delivered day not staged yet, this one included), then daily_refresh.",
)
def daily_partition_after_inbox(context: dg.RunStatusSensorContext):
    run = context.dagster_run
    day = run.tags.get("dagster/partition", "")
    if run.job_name != inbox_ingest_job.name or not day:
        return dg.SkipReason(f"run {run.run_id} is not a partitioned {inbox_ingest_job.name} run")
    return dg.RunRequest(
        run_key=f"daily-partition-after-inbox:{run.run_id}",
        tags={"ecom/trigger": "inbox", "ecom/inbox_run": run.run_id, "ecom/inbox_day": day},
    )


def build() -> dg.Definitions:
    return dg.Definitions(
        assets=[inbox_deliveries, daily_partition_ingest, new_partitions],
        jobs=[inbox_ingest_job, daily_partition_ingest_job, partition_staging_rebuild_job],
        sensors=[inbox_sensor, ingest_after_inbox, daily_partition_after_inbox],
    )
