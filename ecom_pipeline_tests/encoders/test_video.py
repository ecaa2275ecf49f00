"""Video encoder and product_video_embeddings.

No real product videos ship with this project: the clips here are built with PyAV from product photos
(the real ``product_images`` set when ../shared/datasets has it, generated coloured images otherwise), shown
one after another at a few frames per second. The decoder path is the one real mp4/webm files take.
"""

from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest

pytest.importorskip("av")

from ecom_pipeline.ml.encoders import load_image_encoder
from ecom_pipeline.ml.encoders.video import (
    VideoDecodeError,
    VideoEncoder,
    VideoLimits,
    find_product_videos,
    sample_frames,
    write_clip,
)
from ecom_pipeline_tests.datasets import shared_dataset

REAL_IMAGES = shared_dataset("product_images")


def _photos(n: int = 6) -> list:
    """Real product photos when available, else generated images with some structure."""
    from PIL import Image

    if (REAL_IMAGES / "images").is_dir():
        return [Image.open(p).convert("RGB") for p in sorted((REAL_IMAGES / "images").glob("*.jpg"))[:n]]
    rng = np.random.default_rng(1)
    out = []
    for _ in range(n):
        base = np.linspace(0, 255, 128)[None, :, None] * rng.uniform(0.2, 1, 3)
        out.append(Image.fromarray(np.clip(base + rng.normal(0, 20, (128, 128, 3)), 0, 255).astype(np.uint8)))
    return out


def _zero_frame_file(path: Path) -> Path:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        out.start_encoding()  # header only, no frame
    return path


@pytest.fixture(scope="module")
def photos():
    return _photos()


@pytest.fixture(scope="module")
def image_encoder():
    return load_image_encoder("mobilenet_v2")


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_clip_is_sampled_uniformly_and_embeds_near_its_frames(tmp_path, photos, image_encoder, suffix):
    clip = write_clip(tmp_path / f"a{suffix}", photos[:3], fps=4, seconds_per_image=1.0)
    frames = sample_frames(clip, VideoLimits(frames=6))
    assert len(frames) == 6 and frames[0].mode == "RGB"
    enc = VideoEncoder(image_encoder, VideoLimits(frames=6))
    emb, good, failures, counts = enc.encode_paths([clip])
    assert good == [0] and not failures and counts == [6] and emb.shape == (1, 1280)
    assert np.isclose(np.linalg.norm(emb[0]), 1, atol=1e-5)
    # uniform sampling over 3 photos x 4 frames: each photo is seen, so the clip vector sits close to the
    # mean of its photos' vectors and closer to them than to photos not in the clip
    stills = image_encoder.encode_images(photos)
    mean_in = stills[:3].mean(axis=0)
    mean_in /= np.linalg.norm(mean_in)
    assert float(emb[0] @ mean_in) > 0.9
    assert (stills[:3] @ emb[0]).mean() > (stills[3:] @ emb[0]).mean()


def test_bad_videos_get_a_reason_never_an_exception(tmp_path, photos, image_encoder):
    good = write_clip(tmp_path / "good.mp4", photos[:2], fps=4)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    webm = write_clip(tmp_path / "good.webm", photos[:3], fps=4)
    truncated_webm = tmp_path / "truncated.webm"
    truncated_webm.write_bytes(webm.read_bytes()[: webm.stat().st_size // 3])
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    not_video = tmp_path / "photo.mp4"
    photos[0].save(tmp_path / "photo.jpg")
    not_video.write_bytes((tmp_path / "photo.jpg").read_bytes())
    zero = _zero_frame_file(tmp_path / "zero.mkv")
    paths = [good, truncated, truncated_webm, empty, not_video, zero, tmp_path / "missing.mp4"]
    enc = VideoEncoder(image_encoder, VideoLimits(frames=4))
    emb, ok, failures, _ = enc.encode_paths(paths)
    assert ok == [0] and emb.shape == (1, 1280)
    assert set(failures) == {1, 2, 3, 4, 5, 6}
    assert "truncated" in failures[1] and "truncated" in failures[2]
    assert "0 bytes" in failures[3] and "not a video" in failures[4]
    assert "zero frames" in failures[5] and "not a regular file" in failures[6]
    # huge resolution is refused from the header, before any frame is decoded
    with pytest.raises(VideoDecodeError, match="resolution too large"):
        sample_frames(good, VideoLimits(max_pixels=100 * 100))
    with pytest.raises(VideoDecodeError, match="too long"):
        sample_frames(good, VideoLimits(max_seconds=0.5))


def test_folder_convention_finds_videos_by_product_id(tmp_path):
    (tmp_path / "a" / "product_videos").mkdir(parents=True)
    (tmp_path / "b" / "product_videos").mkdir(parents=True)
    for name in ("p1.mp4", "p2.webm", "notes.txt"):
        (tmp_path / "a" / "product_videos" / name).write_bytes(b"x")
    (tmp_path / "b" / "product_videos" / "p1.webm").write_bytes(b"x")
    (tmp_path / "b" / "product_videos" / "p3.MP4").write_bytes(b"x")
    found = find_product_videos(tmp_path / "a", None, tmp_path / "b", tmp_path / "missing")
    assert {k: v.parent.parent.name + "/" + v.name for k, v in found.items()} == {
        "p1": "a/p1.mp4",
        "p2": "a/p2.webm",
        "p3": "b/p3.MP4",
    }


def test_video_asset_embeds_quarantines_and_fuses(tmp_path, photos):
    from ecom_pipeline.assets import embeddings as E
    from ecom_pipeline.assets import video as V
    from ecom_pipeline.resources import ComputeResource, SourceResource, WarehouseResource
    from ecom_pipeline.resources.paths import PathsResource

    img_dir = tmp_path / "img"
    img_dir.mkdir()
    for i, im in enumerate(photos[:4]):
        im.save(img_dir / f"p{i + 1}.png")
    db = tmp_path / "wh.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE SCHEMA staging")
    con.register(
        "p",
        pd.DataFrame(
            {
                "product_id": ["p1", "p2", "p3", "p4"],
                "image_uri": [str(img_dir / f"p{i}.png") for i in range(1, 5)],
            }
        ),
    )
    con.execute("CREATE TABLE staging.products AS SELECT * FROM p")
    con.execute("CREATE TABLE staging.order_items AS SELECT 'o1' order_id, 1 item_seq, 'p1' product_id")
    con.close()
    videos = tmp_path / "product_videos"
    videos.mkdir()
    write_clip(videos / "p1.mp4", photos[:2], fps=4)
    write_clip(videos / "p3.webm", photos[2:4], fps=4)
    data = (videos / "p1.mp4").read_bytes()
    (videos / "p2.mp4").write_bytes(data[: len(data) // 2])  # truncated
    write_clip(videos / "ghost.mp4", photos[:1], fps=4)  # no such product
    res = {
        "warehouse": WarehouseResource(path=str(db)),
        "compute": ComputeResource(device="cpu", threads=2),
        "source": SourceResource(data_root=str(tmp_path)),
        "paths": PathsResource(data_root=str(tmp_path)),
    }
    assets = [E.product_image_embeddings, V.product_video_embeddings, E.product_embeddings]
    result = dg.materialize(assets, resources=res)
    assert result.success
    con = duckdb.connect(str(db), read_only=True)
    vid = con.execute(
        "SELECT product_id, frames, dim, model FROM features.product_video_embeddings ORDER BY 1"
    ).fetchall()
    assert [(r[0], r[1], r[2]) for r in vid] == [("p1", 8, 1280), ("p3", 8, 1280)]
    assert vid[0][3] == "mobilenet_v2+frames8-mean"
    q = dict(con.execute("SELECT product_id, reason FROM features.video_quarantine").fetchall())
    assert set(q) == {"p2", "ghost"} and "no such product" in q["ghost"]
    fused = con.execute(
        "SELECT product_id, modalities, len(embedding) FROM features.product_embeddings ORDER BY 1"
    ).fetchall()
    con.close()
    assert [(r[0], r[1]) for r in fused] == [
        ("p1", "image,video"),
        ("p2", "image"),
        ("p3", "image,video"),
        ("p4", "image"),
    ]
    assert all(r[2] == 1280 * 2 for r in fused)
    # incremental: a second run encodes nothing new
    again = dg.materialize([V.product_video_embeddings], resources=res)
    meta = {
        k: v.value
        for k, v in again.asset_materializations_for_node("features__product_video_embeddings")[
            -1
        ].metadata.items()
    }
    assert meta["encoded_this_run"] == 0 and meta["dagster/row_count"] == 2
