"""Index users and items and build the sparse user × item matrix every recommender trains on."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp


@dataclass
class InteractionData:
    """Training interactions indexed for matrix models.

    ``matrix``: users × items summed weights (CSR, float32); ``purchased``: users × items, 1 where the user
    bought the item (what recommenders exclude by default); ``frame``: the rows with integer indices
    ``u``/``i`` and their time ``ts``; ``user_region``: region label per user index (None when unknown).
    """

    users: pd.Index
    items: pd.Index
    matrix: sp.csr_matrix
    purchased: sp.csr_matrix
    frame: pd.DataFrame
    end: pd.Timestamp
    user_region: np.ndarray
    item_names: dict = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def item_user_counts(self) -> dict:
        counts = np.asarray((self.matrix > 0).sum(axis=0)).ravel()
        return dict(zip(self.items, counts.tolist()))

    def name(self, item_idx: int) -> str:
        item = self.items[item_idx]
        return str(self.item_names.get(item, item))

    def phrases(self, template: str) -> np.ndarray:
        """``template.format(name=<item name>)`` for every item index (object array, cached per template):
        explanations for millions of rows share one string per item instead of building one per row."""
        cache = self.__dict__.setdefault("_phrases", {})
        if template not in cache:
            cache[template] = np.array(
                [template.format(name=self.name(j)) for j in range(self.n_items)], dtype=object
            )
        return cache[template]


def _assemble(
    users: pd.Index,
    items: pd.Index,
    u: np.ndarray,
    i: np.ndarray,
    w: np.ndarray,
    ts: np.ndarray,
    event_type,
    user_regions: pd.Series | None,
    item_names: dict | None,
) -> InteractionData:
    """The matrices, frame and regions from per-interaction arrays (user and item index, float32 weight,
    datetime64[ns] time, event type), shared by :func:`build_data` and :func:`build_data_from_duckdb`."""
    shape = (len(users), len(items))
    matrix = sp.csr_matrix((w, (u, i)), shape=shape, dtype=np.float32)
    matrix.sum_duplicates()
    is_p = np.asarray(event_type == "purchase", dtype=bool)
    purchased = sp.csr_matrix((np.ones(is_p.sum(), dtype=np.float32), (u[is_p], i[is_p])), shape=shape)
    purchased.sum_duplicates()
    purchased.data[:] = 1.0
    frame = pd.DataFrame({"u": u, "i": i, "weight": w, "ts": ts, "event_type": event_type})
    region = np.array([None] * len(users), dtype=object)
    if user_regions is not None and len(user_regions):
        r = user_regions.copy()
        r.index = r.index.astype(str)
        region = r.reindex(users).to_numpy(dtype=object)
        region = np.where(pd.isna(region), None, region)
    end = pd.Timestamp(frame["ts"].max()) if len(frame) else pd.Timestamp.now()
    return InteractionData(users, items, matrix, purchased, frame, end, region, dict(item_names or {}))


def _with_catalog(seen: list, catalog: list | pd.Index | None, item_col: str) -> pd.Index:
    """Items seen (first appearance order), then the catalog's other items (sorted)."""
    if catalog is None:
        return pd.Index(seen, name=item_col)
    extra = pd.Index([str(c) for c in catalog]).difference(pd.Index(seen))
    return pd.Index(list(seen) + list(extra), name=item_col)


def build_data(
    interactions: pd.DataFrame,
    item_col: str = "product_id",
    *,
    user_regions: pd.Series | None = None,
    item_names: dict | None = None,
    catalog: list | pd.Index | None = None,
) -> InteractionData:
    """``catalog``: every item that may be recommended (default: the items seen in ``interactions``)."""
    # factorize: codes and first-appearance uniques in one hash pass (unique + get_indexer took two)
    u, seen_users = pd.factorize(interactions["customer_id"].astype(str))
    i, seen_items = pd.factorize(interactions[item_col].astype(str))
    users = pd.Index(seen_users, name="customer_id")
    items = _with_catalog(list(seen_items), catalog, item_col)  # catalog extras go after the seen items
    w = interactions["weight"].to_numpy(dtype=np.float32)
    ts = pd.to_datetime(interactions["ts"]).to_numpy()
    event_type = interactions["event_type"].to_numpy()
    return _assemble(users, items, u, i, w, ts, event_type, user_regions, item_names)


# Scratch tables of build_data_from_duckdb (TEMP: this connection's own, dropped afterwards).
_ROWS, _USERS, _ITEMS = "_recsys_rows", "_recsys_users", "_recsys_items"


def build_data_from_duckdb(
    con,
    relation: str,
    item_col: str = "product_id",
    *,
    user_regions: pd.Series | None = None,
    item_names: dict | None = None,
    catalog: list | pd.Index | None = None,
    order_by: str | None = None,
) -> InteractionData:
    """:func:`build_data` for interactions that stay in DuckDB: the same indexes, matrices and frame,
    without an interactions DataFrame.

    ``relation``: a table name or a parenthesised query with ``customer_id``, ``item_col``, ``event_type``,
    ``ts`` and ``weight``, its rows in the order ``build_data`` would get them (a table's insertion order,
    or ``order_by``, columns of ``relation`` that order its rows fully): users and items are indexed by first
    appearance.  DuckDB indexes the ids and
    sorts by position; Python receives one numeric array per column (user and item index, weight, time,
    event-type code): at 11.8M interactions about 250 MB instead of a frame of id strings several times
    that.  ``frame["event_type"]`` is categorical (equal, value by value, to build_data's strings)."""
    return build_levels_from_duckdb(
        con,
        relation,
        (item_col,),
        user_regions=user_regions,
        item_names={item_col: item_names},
        catalogs={item_col: catalog},
        order_by=order_by,
    )[item_col]


def build_levels_from_duckdb(
    con,
    relation: str,
    item_cols: tuple[str, ...],
    *,
    user_regions: pd.Series | None = None,
    item_names: dict[str, dict | None] | None = None,
    catalogs: dict[str, list | pd.Index | None] | None = None,
    order_by: str | None = None,
) -> dict[str, InteractionData]:
    """:func:`build_data_from_duckdb` of the same rows for each column of ``item_cols`` (e.g. product and
    category), as a dict by column.  The rows are numbered and the users indexed once for all of them: the
    sort of every interaction is most of the work (at 11.8M rows 5-11 s, against 3 s per extra level).
    ``item_names`` / ``catalogs``: per column (absent: none)."""
    order = f"ORDER BY {order_by}" if order_by else ""
    items = {col: f"_item{k}" for k, col in enumerate(item_cols)}
    quoted = {col: '"' + col.replace('"', '""') + '"' for col in item_cols}
    picked = ", ".join(f"CAST({quoted[col]} AS VARCHAR) AS {items[col]}" for col in item_cols)
    columns = (
        f"CAST(customer_id AS VARCHAR) AS _user, {picked}, CAST(event_type AS VARCHAR) AS event_type, ts, "
        "CAST(weight AS DOUBLE) AS weight"
    )
    sorted_insert = bool(order_by) and _inserts_keep_order(con)
    pos = "rowid" if sorted_insert else "_pos"  # a row's position in the interactions' order
    out = {}
    try:
        if sorted_insert:
            # the sorted rows are stored in that order (rowid = position): DuckDB's ORDER BY sorts in parallel
            # and spills less than a window's sort (11.8M rows under a 1 GiB cap: 7 s instead of 15)
            con.execute(f"CREATE OR REPLACE TEMP TABLE {_ROWS} AS SELECT {columns} FROM {relation} {order}")
        else:
            # explicit: a window over a parallel scan need not keep a subquery's ORDER BY
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {_ROWS} AS SELECT row_number() OVER ({order}) AS _pos, "
                f"{columns} FROM {relation}"
            )
        _first_appearance_index(con, _USERS, "_user", "u", pos)
        users = pd.Index(
            [r[0] for r in con.execute(f"SELECT _user FROM {_USERS} ORDER BY u").fetchall()],
            name="customer_id",
        )
        kinds = [
            r[0]
            for r in con.execute(
                f"SELECT DISTINCT event_type FROM {_ROWS} WHERE event_type IS NOT NULL ORDER BY 1"
            ).fetchall()
        ]
        for col in item_cols:
            key = items[col]
            _first_appearance_index(con, _ITEMS, key, "i", pos)
            seen = [r[0] for r in con.execute(f"SELECT {key} FROM {_ITEMS} ORDER BY i").fetchall()]
            arrays = con.execute(
                "SELECT u.u, i.i, r.weight, r.ts, "
                "CAST(coalesce(list_position(?::VARCHAR[], r.event_type), 0) - 1 AS SMALLINT) AS kind "
                f"FROM {_ROWS} r JOIN {_USERS} u USING (_user) JOIN {_ITEMS} i USING ({key}) "
                f"ORDER BY r.{pos}",
                [kinds],
            ).fetchnumpy()
            event_type = pd.Categorical.from_codes(
                np.asarray(arrays["kind"], dtype=np.int16), categories=kinds
            )
            out[col] = _assemble(
                users,
                _with_catalog(seen, (catalogs or {}).get(col), col),
                np.asarray(arrays["u"], dtype=np.int64),
                np.asarray(arrays["i"], dtype=np.int64),
                np.asarray(arrays["weight"], dtype=np.float64).astype(np.float32),
                np.asarray(arrays["ts"]).astype("datetime64[ns]"),
                event_type,
                user_regions,
                (item_names or {}).get(col),
            )
            del arrays
    finally:
        for table in (_ROWS, _USERS, _ITEMS):
            con.execute(f"DROP TABLE IF EXISTS temp.{table}")
    return out


def _first_appearance_index(con, table: str, key: str, index: str, pos: str) -> None:
    """``table`` (``key``, ``index``): each distinct ``key`` of the numbered rows and its index, in order of
    first appearance (``pos``: the rows' position column)."""
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT {key}, "
        f"CAST(row_number() OVER (ORDER BY first_pos) - 1 AS BIGINT) AS {index} "
        f"FROM (SELECT {key}, min({pos}) AS first_pos FROM {_ROWS} GROUP BY {key})"
    )


def _inserts_keep_order(con) -> bool:
    """Whether a sorted query's rows are stored in that order (DuckDB's ``preserve_insertion_order``, on by
    default; off, an insert may store them in any order)."""
    setting = con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0]
    return str(setting).lower() == "true"


def select_rows(
    data: InteractionData, keep: np.ndarray, *, catalog: list | pd.Index | None = None
) -> InteractionData:
    """``data`` restricted to the rows where ``keep`` is true: what :func:`build_data` gives for those rows of
    the interactions (same first-appearance indexes, matrices, frame, regions and names), from ``data``'s
    integer arrays instead of an interactions frame of id strings.  ``catalog`` as in :func:`build_data`
    (default: only the items the kept rows have)."""
    f = data.frame
    keep = np.asarray(keep, dtype=bool)
    u, user_of = pd.factorize(f["u"].to_numpy()[keep])  # first appearance among the kept rows
    i, item_of = pd.factorize(f["i"].to_numpy()[keep])
    users = pd.Index(data.users[user_of], name=data.users.name)
    regions = pd.Series(data.user_region[user_of], index=users, dtype=object)
    return _assemble(
        users,
        _with_catalog(list(data.items[item_of]), catalog, data.items.name),
        u.astype(np.int64),
        i.astype(np.int64),
        f["weight"].to_numpy()[keep],
        f["ts"].to_numpy()[keep],
        f["event_type"].array[keep],
        regions,
        data.item_names,
    )


def as_interaction_data(
    interactions: pd.DataFrame | InteractionData,
    user_regions: pd.Series | None = None,
    item_col: str = "product_id",
    *,
    item_names: dict | None = None,
    catalog: list | pd.Index | None = None,
) -> InteractionData:
    """Every interaction indexed by ``item_col``: ``interactions`` itself when it is already indexed (the
    assets build it in DuckDB: ``incremental.interactions.read_interaction_data``; it carries its own
    regions, names and catalogue), else ``build_data`` of the frame."""
    if isinstance(interactions, InteractionData):
        return interactions
    return build_data(
        interactions, item_col, user_regions=user_regions, item_names=item_names, catalog=catalog
    )


def interaction_count(interactions: pd.DataFrame | InteractionData) -> int:
    """Rows of a frame or of indexed data (what callers of :func:`as_interaction_data` check first)."""
    return len(interactions.frame if isinstance(interactions, InteractionData) else interactions)
