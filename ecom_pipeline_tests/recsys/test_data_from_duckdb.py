"""The recommender's user x item matrices built in DuckDB (numeric arrays fetched column-wise) equal the ones
build_data makes from an interactions DataFrame: same indexes, matrices, frame, regions and end."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from ecom_pipeline.ml.recsys.data import build_data, build_data_from_duckdb


def _interactions(n: int, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    kinds = np.array(["view", "cart", "purchase"])
    return pd.DataFrame(
        {
            "customer_id": [f"c{x}" for x in rng.integers(0, n // 7 + 2, n)],
            "product_id": [f"p{x}" for x in rng.zipf(1.6, n) % 997],
            "category": "unknown",
            "event_type": kinds[rng.integers(0, 3, n)],
            "ts": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 10**7, n), unit="s"),
            "weight": rng.choice([1.0, 3.0, 5.0, 0.1], n),
            "source": "events",
        }
    )


def _assert_same(a, b) -> None:
    assert a.users.equals(b.users) and a.items.equals(b.items)
    assert a.users.name == b.users.name and a.items.name == b.items.name
    for left, right in ((a.matrix, b.matrix), (a.purchased, b.purchased)):
        assert left.shape == right.shape and left.dtype == right.dtype
        assert (left != right).nnz == 0
    for col in ("u", "i", "weight", "ts"):
        assert a.frame[col].dtype == b.frame[col].dtype, col
        np.testing.assert_array_equal(a.frame[col].to_numpy(), b.frame[col].to_numpy())
    assert list(a.frame["event_type"]) == list(b.frame["event_type"].astype(object))
    assert a.end == b.end
    assert list(a.user_region) == list(b.user_region)


@pytest.mark.parametrize("n", [1, 40_000])
def test_matrix_from_duckdb_equals_the_pandas_built_one(n):
    df = _interactions(n)
    regions = pd.Series({"c1": "SP", "c2": "RJ", "c3": None})
    catalog = ["p5", "zz-never-seen", "p1", "aa-never-seen"]
    con = duckdb.connect()
    con.execute("CREATE TABLE interactions AS SELECT * FROM df")
    got = build_data_from_duckdb(
        con, "interactions", user_regions=regions, catalog=catalog, item_names={"p1": "x"}
    )
    _assert_same(build_data(df, user_regions=regions, catalog=catalog, item_names={"p1": "x"}), got)
    assert got.item_names == {"p1": "x"}
    # a query in another order: indexes follow the query's order, as build_data follows the frame's
    ordered = df.sort_values(["ts", "customer_id", "product_id", "event_type"], kind="stable")
    query = "(SELECT * FROM interactions ORDER BY ts, customer_id, product_id, event_type)"
    _assert_same(build_data(ordered.reset_index(drop=True)), build_data_from_duckdb(con, query))
    # the scratch tables are gone
    assert not con.execute("SELECT * FROM duckdb_tables() WHERE table_name LIKE '_recsys%'").fetchall()
    con.close()


def test_category_items_and_empty_input():
    df = _interactions(500)
    con = duckdb.connect()
    con.execute("CREATE TABLE interactions AS SELECT * FROM df")
    _assert_same(build_data(df, "category"), build_data_from_duckdb(con, "interactions", "category"))
    empty = build_data_from_duckdb(con, "(SELECT * FROM interactions WHERE false)")
    assert empty.n_users == empty.n_items == 0 and empty.matrix.shape == (0, 0) and len(empty.frame) == 0
    con.close()


def _reference_split(
    df, *, cutoff=None, test_fraction=0.2, exclude_seen=True, require_history=True, **sample
):
    """The user-level temporal split written directly in pandas on the frame (the project's implementation
    before split_data): an independent oracle for it.  Returns (cutoff, train rows, truth, eligible)."""
    from ecom_pipeline.ml.recsys.evaluation import sample_users
    from ecom_pipeline.ml.splits import temporal_split

    if cutoff is None:
        target_times = df.loc[df["event_type"] == "purchase", ["ts"]]
        cutoff = temporal_split(target_times, "ts", test_fraction=test_fraction).cutoff
    split = temporal_split(df, "ts", cutoff=cutoff)
    train, test = split.train, split.test
    test = test[test["event_type"] == "purchase"]
    if require_history:
        test = test[test["customer_id"].isin(set(train["customer_id"]))]
    pairs = test[["customer_id", "product_id"]].drop_duplicates()
    if exclude_seen and len(pairs):
        bought = train.loc[train["event_type"] == "purchase", ["customer_id", "product_id"]].drop_duplicates()
        pairs = pairs.merge(bought, how="left", indicator=True)
        pairs = pairs[pairs["_merge"] == "left_only"].drop(columns="_merge")
    truth = pairs.groupby("customer_id")["product_id"].agg(lambda s: set(map(str, s))).to_dict()
    return (
        split.cutoff,
        train,
        sample_users(truth, sample.get("max_eval_users"), sample.get("seed", 0)),
        len(truth),
    )


@pytest.mark.parametrize("exclude_seen", [True, False])
@pytest.mark.parametrize("require_history", [True, False])
def test_split_on_data_equals_the_frame_split_then_build_data(exclude_seen, require_history):
    """split_data (integer arrays of one InteractionData) gives the pandas reference's cutoff and truth and
    build_data's training data, with and without a catalog and a sample; user_temporal_split (frames) too."""
    from ecom_pipeline.ml.recsys.evaluation import split_data, user_temporal_split

    df = _interactions(30_000, seed=7)
    regions = pd.Series({"c1": "SP", "c2": "RJ", "c3": None, "c40": "MG"})
    data = build_data(df, user_regions=regions, item_names={"p1": "x"})
    args = dict(exclude_seen=exclude_seen, require_history=require_history, test_fraction=0.3)
    cutoff, train, truth, eligible = _reference_split(df, **args)
    got = split_data(data, **args)
    assert got.cutoff == cutoff and got.eligible_users == eligible
    assert got.truth == truth and list(got.truth) == list(truth)
    _assert_same(build_data(train, user_regions=regions), got.train)
    assert got.train.item_names == {"p1": "x"}
    frames = user_temporal_split(df, **args)
    assert frames.truth == truth and frames.train.equals(train)
    assert set(frames.test["event_type"]) == {"purchase"} and (frames.test["ts"] >= cutoff).all()
    catalog = list(data.items)
    with_catalog = split_data(data, cutoff=cutoff, max_eval_users=50, seed=4, catalog=catalog, **args)
    sampled = _reference_split(df, cutoff=cutoff, max_eval_users=50, seed=4, **args)[2]
    assert with_catalog.truth == sampled and len(sampled) == 50
    _assert_same(build_data(train, user_regions=regions, catalog=catalog), with_catalog.train)
    # a given cutoff with rows on it: they are test rows on both routes
    on_a_row = df["ts"].sort_values().iloc[len(df) // 2]
    assert split_data(data, cutoff=on_a_row, **args).truth == _reference_split(df, cutoff=on_a_row, **args)[2]


def test_split_on_data_from_duckdb_has_categorical_event_types():
    from ecom_pipeline.ml.recsys.evaluation import split_data

    df = _interactions(5000, seed=9)
    con = duckdb.connect()
    con.execute("CREATE TABLE interactions AS SELECT * FROM df")
    got = split_data(build_data_from_duckdb(con, "interactions"))
    con.close()
    _, train, truth, _ = _reference_split(df)
    assert got.truth == truth
    _assert_same(build_data(train), got.train)


def test_warehouse_interactions_read_as_data_equal_the_frame_route(tmp_path):
    """read_interaction_data (what the sequence step reads) on a read-only connection, rows stored out of
    order: the same data as build_data(read_interactions(...)), the frame every other recommender reads."""
    from ecom_pipeline.incremental.interactions import read_interaction_data, read_interactions
    from ecom_pipeline.ml.recsys.interactions import INTERACTION_COLUMNS

    df = _interactions(20_000, seed=11).sample(frac=1.0, random_state=2)  # stored in no particular order
    db = tmp_path / "w.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE SCHEMA features")
    con.register("shuffled", df)
    columns = ", ".join(INTERACTION_COLUMNS)
    con.execute(f"CREATE TABLE features.interactions AS SELECT {columns} FROM shuffled")
    con.close()
    regions = pd.Series({"c1": "SP", "c2": "RJ"})
    con = duckdb.connect(str(db), read_only=True)
    frame = read_interactions(con)
    frame["ts"] = pd.to_datetime(frame["ts"])
    got = read_interaction_data(con, user_regions=regions)
    con.close()
    _assert_same(build_data(frame, user_regions=regions), got)


@pytest.mark.parametrize("with_embeddings", [True, False])
def test_related_items_on_data_from_duckdb_equal_the_frame_route(with_embeddings):
    """serving.related_items from interactions indexed in DuckDB (what the asset reads) equals the frame
    route: co-occurrence neighbours, and for cold products content neighbours or the same category's popular
    products (distinct customers per product, counted on the indexed data)."""
    from ecom_pipeline.ml.recsys.pipeline import related_items

    df = _interactions(30_000, seed=5)
    df = df[df["product_id"] != "p7"]  # a product nobody bought: cold start
    names = {f"p{i}": f"product {i}" for i in range(997)}
    products = pd.DataFrame(
        {"product_id": [f"p{i}" for i in range(997)], "category": ["a", "b", "c"] * 332 + ["a"]}
    )
    rng = np.random.default_rng(0)
    emb = (
        pd.DataFrame({"product_id": products["product_id"], "embedding": list(rng.normal(size=(997, 8)))})
        if with_embeddings
        else None
    )
    con = duckdb.connect()
    con.execute("CREATE TABLE interactions AS SELECT * FROM df")
    data = build_data_from_duckdb(con, "interactions", item_names=names)
    common = dict(n=10, item_names=names, product_embeddings=emb, products=products)
    on_frame, on_data = related_items(df, **common), related_items(data, **common)
    assert set(on_frame["method"]) == {
        "co_occurrence",
        "content_embedding" if with_embeddings else "category_popularity",
    }
    assert "p7" in set(on_frame["product_id"])
    pd.testing.assert_frame_equal(on_frame, on_data)
    by_category = on_data[on_data["method"] == "category_popularity"]
    buyers = df.groupby("product_id")["customer_id"].nunique()
    assert with_embeddings or len(by_category)
    assert (by_category["score"] == by_category["related_product_id"].map(buyers)).all()


def test_levels_built_together_equal_each_level_built_alone():
    """build_levels_from_duckdb numbers the rows and indexes the users once for several item columns: each
    level equals build_data_from_duckdb of that column alone (and build_data of the frame), with its own
    names and catalogue."""
    from ecom_pipeline.ml.recsys.data import build_levels_from_duckdb

    df = _interactions(20_000, seed=8)
    df["category"] = "cat" + (df["product_id"].str[1:].astype(int) % 13).astype(str)
    regions = pd.Series({"c1": "SP", "c2": "RJ"})
    names = {"product_id": {"p1": "one"}, "category": None}
    catalogs = {"product_id": ["p1", "zz-extra"], "category": None}
    con = duckdb.connect()
    con.execute("CREATE TABLE interactions AS SELECT * FROM df")
    both = build_levels_from_duckdb(
        con,
        "interactions",
        ("product_id", "category"),
        user_regions=regions,
        item_names=names,
        catalogs=catalogs,
    )
    assert list(both) == ["product_id", "category"]
    for col in ("product_id", "category"):
        alone = build_data_from_duckdb(
            con, "interactions", col, user_regions=regions, item_names=names[col], catalog=catalogs[col]
        )
        _assert_same(both[col], alone)
        _assert_same(both[col], build_data(df, col, user_regions=regions, catalog=catalogs[col]))
        assert both[col].item_names == (names[col] or {})
    assert both["category"].n_items == 13 and "zz-extra" in set(both["product_id"].items)
    assert not con.execute("SELECT * FROM duckdb_tables() WHERE table_name LIKE '_recsys%'").fetchall()


def test_sorted_insert_and_window_numbering_agree_on_many_row_groups(tmp_path):
    """With an ORDER BY the rows are numbered by a sorted insert (rowid = position) where DuckDB keeps
    insertion order, by a window otherwise: on 300k shuffled rows (several row groups, two threads) both give
    what build_data gives on the frame sorted the same way."""
    df = _interactions(300_000, seed=4).sample(frac=1.0, random_state=1).reset_index(drop=True)
    order = ["ts", "customer_id", "product_id", "event_type"]
    expected = build_data(df.sort_values(order, kind="stable").reset_index(drop=True))
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("SET threads = 2")
    con.execute("CREATE TABLE interactions AS SELECT * FROM df")
    for keep_order in ("true", "false"):  # false: the window numbering
        con.execute(f"SET preserve_insertion_order = {keep_order}")
        _assert_same(expected, build_data_from_duckdb(con, "interactions", order_by=", ".join(order)))


def test_category_aggregate_in_duckdb_equals_the_group_by_and_ignores_row_order():
    """aggregate_interactions (DuckDB, what features.category_interactions holds) gives pandas' group-by per
    (customer, item) without rows missing a key, with weights summed exactly: the same table whatever order
    the rows come in, so an incremental run and a full rebuild agree to the bit."""
    from ecom_pipeline.ml.recsys.interactions import aggregate_interactions

    df = _interactions(60_000, seed=9)
    df["category"] = "cat" + (df["product_id"].str[1:].astype(int) % 7).astype(str)
    df.loc[df.index[:50], "category"] = None
    df.loc[df.index[50:60], "customer_id"] = None
    got = aggregate_interactions(df, "category")
    kinds = {k: (df["event_type"] == k).astype(int) for k in ("purchase", "cart", "view")}
    expected = (
        df.assign(_p=kinds["purchase"], _c=kinds["cart"], _v=kinds["view"])
        .groupby(["customer_id", "category"], as_index=False)
        .agg(
            weight=("weight", "sum"),
            n_interactions=("weight", "size"),
            n_purchases=("_p", "sum"),
            n_carts=("_c", "sum"),
            n_views=("_v", "sum"),
            first_ts=("ts", "min"),
            last_ts=("ts", "max"),
        )
    )
    assert len(got) == len(expected) and got["customer_id"].notna().all() and got["category"].notna().all()
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-12)
    shuffled = aggregate_interactions(df.sample(frac=1.0, random_state=3), "category")
    pd.testing.assert_frame_equal(got, shuffled, check_exact=True)
