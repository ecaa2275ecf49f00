"""Customer segments: KMeans on standardised log-RFM (+ experience) with human-readable descriptions."""

from __future__ import annotations

import numpy as np
import pandas as pd

SEGMENT_FEATURES = ["recency_days", "frequency", "monetary", "avg_item_price", "n_categories"]


def _logged(profiles: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    x = profiles[features].astype(float).copy()
    for c in ("recency_days", "frequency", "monetary", "avg_item_price", "n_categories"):
        if c in x:
            x[c] = np.log1p(x[c].clip(lower=0))
    return x


def _scaling(x: pd.DataFrame) -> dict:
    """The fill values and standardisation of a fit (kept with the centroids, so a daily assignment scales
    new rows the way the fit scaled its own)."""
    median = x.median().fillna(0.0)
    filled = x.fillna(median)
    return {
        "median": median.tolist(),
        "mean": filled.mean().tolist(),
        "sd": filled.std(ddof=0).replace(0, 1.0).tolist(),
    }


def _scaled(x: pd.DataFrame, scaling: dict) -> np.ndarray:
    filled = x.fillna(pd.Series(scaling["median"], index=x.columns))
    return ((filled - np.asarray(scaling["mean"])) / np.asarray(scaling["sd"])).to_numpy()


def _matrix(profiles: pd.DataFrame, features: list[str]) -> np.ndarray:
    x = _logged(profiles, features)
    return _scaled(x, _scaling(x))


def _describe(seg: pd.DataFrame, everyone: pd.DataFrame) -> tuple[str, str]:
    """(short name, one-sentence description) comparing the segment's medians with everyone's."""
    med, all_med = seg.median(numeric_only=True), everyone.median(numeric_only=True)
    q = everyone.quantile([0.33, 0.67], numeric_only=True)

    def level(col, low_word, high_word, mid_word=""):
        v = med[col]
        if v <= q.loc[0.33, col] and q.loc[0.33, col] < q.loc[0.67, col]:
            return low_word
        if v >= q.loc[0.67, col] and q.loc[0.33, col] < q.loc[0.67, col]:
            return high_word
        return mid_word

    recency = level("recency_days", "recent", "lapsed", "")
    repeat = (
        "repeat"
        if seg["frequency"].mean() >= max(1.5, everyone["frequency"].mean() * 1.3)
        else ("one-time" if med["frequency"] <= 1 else "")
    )
    spend = level("monetary", "low-spend", "high-spend", "mid-spend")
    name = " ".join(w for w in (recency, repeat, spend, "buyers") if w)
    top_cat = (
        seg["top_category"].mode().iloc[0]
        if "top_category" in seg and seg["top_category"].notna().any()
        else "n/a"
    )
    state = seg["state"].mode().iloc[0] if "state" in seg and seg["state"].notna().any() else "n/a"
    text = (
        f"{len(seg):,} customers ({len(seg) / len(everyone):.0%}); median {med['frequency']:.0f} order(s), "
        f"last {med['recency_days']:.0f} days ago (all: {all_med['recency_days']:.0f}), spend "
        f"{med['monetary']:.0f} (all: {all_med['monetary']:.0f}); mostly {top_cat}; most common state {state}"
    )
    return name[:1].upper() + name[1:], text


def segment_customers(
    profiles: pd.DataFrame, n_segments: int = 5, seed: int = 0, features: list[str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Returns (profiles + segment, segment_name, segment_description; summary with one row per segment)."""
    out, summary, _model = fit_segments(profiles, n_segments, seed, features)
    return out, summary


SUMMARY_COLUMNS = [
    "segment",
    "segment_name",
    "description",
    "customers",
    "share",
    "median_recency_days",
    "median_frequency",
    "median_monetary",
    "mean_frequency",
]


def fit_segments(
    profiles: pd.DataFrame, n_segments: int = 5, seed: int = 0, features: list[str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, dict | None]:
    """KMeans over every profile: (profiles + segment columns, summary, the fitted model for
    :func:`assign_segments`: features, scaling, centroids in segment order and segment names; None when
    there is nothing to fit)."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    features = [f for f in (features or SEGMENT_FEATURES) if f in profiles]
    out = profiles.copy()
    if len(out) == 0:
        for c in ("segment", "segment_name", "segment_description"):
            out[c] = pd.Series(dtype="object")
        return out, pd.DataFrame(columns=SUMMARY_COLUMNS), None
    k = max(1, min(n_segments, len(out) // 5 or 1))
    logged = _logged(out, features)
    scaling = _scaling(logged)
    x = _scaled(logged, scaling)
    # one thread: on a busy 2-core machine KMeans' OpenMP threads spin against each other (measured 41 s with
    # the default vs 1.3 s with one thread for 30k customers at load 16)
    with threadpool_limits(1):
        if k > 1:
            km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(x)
            labels, centres = km.labels_, km.cluster_centers_
        else:
            labels, centres = np.zeros(len(out), int), x.mean(axis=0, keepdims=True)
    # stable numbering: segment 0 = highest median monetary
    order = pd.Series(out["monetary"].to_numpy()).groupby(labels).median().sort_values(ascending=False).index
    remap = {old: new for new, old in enumerate(order)}
    out["segment"] = [remap[v] for v in labels]
    summary, names = _summarise(out, {})
    model = {
        "features": features,
        **scaling,
        "centroids": [np.asarray(centres[old]).tolist() for old in order],
        "names": {str(s): n for s, n in names.items()},
        "fitted_customers": len(out),
        "n_segments": n_segments,
        "seed": seed,
    }
    return out, summary, model


def assign_segments(profiles: pd.DataFrame, model: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each profile's segment = the nearest centroid of a stored fit (:func:`fit_segments`), scaled with that
    fit's medians, means and deviations; names are the fit's, descriptions and the summary describe today's
    members.  What KMeans' own predict does, without refitting over everyone."""
    out = profiles.copy()
    if len(out) == 0:
        for c in ("segment", "segment_name", "segment_description"):
            out[c] = pd.Series(dtype="object")
        return out, pd.DataFrame(columns=SUMMARY_COLUMNS)
    x = _scaled(_logged(out, model["features"]), model)
    centres = np.asarray(model["centroids"])
    distances = ((x[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    out["segment"] = distances.argmin(axis=1)
    summary, _names = _summarise(out, {int(s): n for s, n in model["names"].items()})
    return out, summary


def _summarise(out: pd.DataFrame, fixed_names: dict[int, str]) -> tuple[pd.DataFrame, dict[int, str]]:
    """Adds segment_name / segment_description to ``out`` (in place); ``fixed_names``: names to keep (a
    stored fit's), others are made from the members.  Returns (summary, segment -> name)."""
    rows, names = [], {}
    for s, seg in out.groupby("segment"):
        name, text = _describe(seg, out)
        if s in fixed_names:
            name = fixed_names[s]
        elif name in {n for n, _ in names.values()}:
            cat = seg["top_category"].mode().iloc[0] if seg["top_category"].notna().any() else None
            name = f"{name}, mostly {cat}" if cat else name
            if name in {n for n, _ in names.values()}:
                name = f"{name} (segment {s})"
        names[s] = (name, text)
        rows.append(
            {
                "segment": s,
                "segment_name": name,
                "description": text,
                "customers": len(seg),
                "share": len(seg) / len(out),
                "median_recency_days": seg["recency_days"].median(),
                "median_frequency": seg["frequency"].median(),
                "median_monetary": seg["monetary"].median(),
                "mean_frequency": seg["frequency"].mean(),
            }
        )
    out["segment_name"] = out["segment"].map(lambda s: names[s][0])
    out["segment_description"] = out["segment"].map(lambda s: names[s][1])
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS), {s: n for s, (n, _t) in names.items()}
