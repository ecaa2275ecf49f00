"""What each endpoint computes, free of the web framework (the FastAPI layer only validates and times)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from ecom_pipeline.api.data import ServingData
from ecom_pipeline.api.models import (
    SENTIMENT,
    SENTIMENT_BASELINE,
    SENTIMENT_CLASSES,
    SENTIMENT_FINETUNED,
    Champions,
)
from ecom_pipeline.ml.serving_gate import (  # the task names the pipeline's gate writes
    GATED_TABLES,
    OVERRIDING_TASKS,
)

log = logging.getLogger(__name__)

# weight of an event type in the session vector (a cart says more than a view)
EVENT_WEIGHTS = {"view": 1.0, "cart": 2.0, "purchase": 3.0}
SESSION_HALF_LIFE_MIN = 30.0  # older events of the session count less
SESSION_WEIGHT = 0.7  # share of the session closeness in the re-ranked score when the session has vectors
CANDIDATES_PER_SESSION = 50  # neighbours of the session vector added to the candidate pool

# intent -> (team, priority) for customer service; negative reviews are escalated one step
ROUTES = {
    "late_delivery": ("logistics", "normal"),
    "not_received": ("logistics", "high"),
    "wrong_or_damaged": ("returns", "high"),
    "quality": ("quality", "normal"),
    "seller_service": ("marketplace_sellers", "normal"),
    "other": ("customer_care", "low"),
}
ESCALATE = {"low": "normal", "normal": "high", "high": "urgent", "urgent": "urgent"}


# ------------------------------------------------------------------------------------------------- gate


def gate_block(data: ServingData, task: str, scope: str, candidate: str) -> str | None:
    """Why ``ml.serving_decisions`` forbids serving ``candidate`` for ``task``/``scope`` (None: allowed).

    The newest decision for the task, scope and candidate wins; a scope of '*' or 'all' covers every scope.
    Without the table (or a row) the app behaves like the batch tables: the candidate is served.
    """
    for key in ((task, candidate, scope), (task, candidate, "*"), (task, candidate, "all")):
        decision = data.gate.get(key)
        if decision is not None:
            served, reason = decision
            return (
                None
                if served
                else (reason or f"{candidate} is not served for {task}/{scope} (ml.serving_decisions)")
            )
    return None


def gate_serves(data: ServingData, task: str, scope: str, candidate: str) -> tuple[bool, str]:
    """Whether the newest ``ml.serving_decisions`` row for ``task``/``scope``/``candidate`` serves the
    candidate, and why.  Unlike :func:`gate_block`, no row means not served: a candidate that takes over from
    what serves today must have won its comparison (``serving_gate.served_model``, as the batch side)."""
    decision = data.gate.get((task, candidate, scope))
    if decision is None:
        return False, f"no decision row for {task}/{scope} on {candidate}: what served before serves"
    served, reason = decision
    return bool(served), reason or f"{candidate} {'is' if served else 'is not'} served for {task}/{scope}"


# ------------------------------------------------------------------------------------------ recommendations


@dataclass
class SessionEvent:
    product_id: str
    event_type: str
    ts: datetime


def session_vector(
    data: ServingData, events: list[SessionEvent], now: datetime
) -> tuple[np.ndarray | None, dict[str, float]]:
    """Weighted mean of the fused embeddings of the session's products (type weight × recency decay)."""
    weights: dict[str, float] = {}
    for e in events:
        if data.fused.vector(e.product_id) is None:
            continue
        age_min = max((now - e.ts).total_seconds() / 60.0, 0.0)
        w = EVENT_WEIGHTS.get(e.event_type, 1.0) * 0.5 ** (age_min / SESSION_HALF_LIFE_MIN)
        weights[e.product_id] = weights.get(e.product_id, 0.0) + w
    if not weights:
        return None, {}
    vec = sum(w * data.fused.vector(p) for p, w in weights.items())
    norm = float(np.linalg.norm(vec))
    return (vec / norm if norm else None), weights


def base_list(
    data: ServingData, customer: str, region: str | None, allow_batch: bool, k: int
) -> tuple[list[dict], str]:
    """The customer's batch recommendations, else popular items of their region, else popular overall."""
    rows = data.recommendations.rows(customer) if allow_batch else None
    if rows is not None and rows[0]:
        ids, reasons, model = rows
        return (
            [
                {"product_id": p, "reason": r or "recommended from your history", "source": f"batch:{model}"}
                for p, r in zip(ids, reasons)
            ],
            "batch",
        )
    state = data.customer_region.get(customer) or region
    if state and data.popular.get(state):
        return (
            [
                {"product_id": p, "reason": f"popular in your region ({state})", "source": "regional_popular"}
                for p in data.popular[state][: max(k * 3, 30)]
            ],
            "regional_popular",
        )
    return (
        [
            {"product_id": p, "reason": "popular with all customers", "source": "popular"}
            for p in data.popular.get("*", [])[: max(k * 3, 30)]
        ],
        "popular",
    )


def recommend(
    data: ServingData, customer: str, events: list[SessionEvent], *, k: int, region: str | None, now: datetime
) -> dict:
    """Top-``k`` items for ``customer`` (pseudonymised id), re-ranked toward the session's products."""
    rows = data.recommendations.rows(customer)
    known = rows is not None
    model = rows[2] if rows else None
    blocked = gate_block(data, GATED_TABLES["serving.recommendations"][0], "item", model) if model else None
    base, basis = base_list(data, customer, region, allow_batch=blocked is None, k=k)
    svec, weights = session_vector(data, events, now)
    seen = {e.product_id for e in events}
    n = len(base)
    scores: dict[str, dict] = {}
    for i, item in enumerate(base):
        if item["product_id"] in seen or item["product_id"] in scores:
            continue
        scores[item["product_id"]] = {**item, "base": 1.0 - i / max(n, 1)}
    if svec is not None:
        for pid, _ in data.fused.top_k(svec, CANDIDATES_PER_SESSION, exclude=seen):
            scores.setdefault(pid, {"product_id": pid, "reason": "", "source": "session", "base": 0.0})
    anchors = list(weights)
    anchor_mat = np.stack([data.fused.vector(p) for p in anchors]) if anchors else None
    sims: dict[str, float] = {}
    if svec is not None:
        with_vec = [p for p in scores if p in data.fused.position]
        if with_vec:
            values = data.fused.matrix[[data.fused.position[p] for p in with_vec]] @ svec
            sims = dict(zip(with_vec, values.tolist()))
    # cosines of one embedding space sit in a narrow band: rescale them to 0..1 over the candidates so the
    # session can move the list as much as the base ranking
    lo, hi = (min(sims.values()), max(sims.values())) if sims else (0.0, 1.0)
    ranked = []
    for pid, item in scores.items():
        sim = sims.get(pid)
        closeness = (sim - lo) / (hi - lo) if sim is not None and hi > lo else 0.0
        score = (
            (1 - SESSION_WEIGHT) * item["base"] + SESSION_WEIGHT * closeness
            if svec is not None
            else item["base"]
        )
        ranked.append((-score, pid, closeness))
    ranked.sort()
    out = []
    for neg_score, pid, closeness in ranked[:k]:  # names and reasons only for what is returned
        item = scores[pid]
        reason, source = item["reason"], item["source"]
        sim = sims.get(pid)
        if sim is not None and SESSION_WEIGHT * closeness >= (1 - SESSION_WEIGHT) * item["base"]:
            anchor = (
                anchors[int(np.argmax(anchor_mat @ data.fused.vector(pid)))]
                if len(anchors) > 1
                else anchors[0]
            )
            reason = f"similar to {data.name(anchor)} ({anchor}) in this session (cosine {sim:.2f})"
            source = "session"
        out.append(
            {
                "product_id": pid,
                "name": data.name(pid),
                "score": round(-neg_score, 6),
                "reason": reason,
                "source": source,
            }
        )
    return {
        "items": out[:k],
        "basis": basis,
        "known_customer": known,
        "session_products_used": len(weights),
        "gate": blocked,
    }


# ------------------------------------------------------------------------------------------------ triage


def triage(
    champions: Champions,
    data: ServingData,
    encoder,
    intents: tuple[list[str], np.ndarray] | None,
    masked_text: str,
    timeout: float,
) -> dict:
    """Sentiment, intent and routing of one (already masked) review text.

    The sentiment model follows ``features.review_sentiment``'s choice: the fine-tuned encoder where its gate
    decision (task ``sentiment_finetuned``, scope 3class) serves it, else the embedding head unless its gate
    blocks it, else the TF-IDF baseline."""
    head, baseline = champions.get(SENTIMENT), champions.get(SENTIMENT_BASELINE)
    blocked = gate_block(data, GATED_TABLES["features.review_sentiment"][0], "3class", SENTIMENT)
    finetuned, tokens = champions.get(SENTIMENT_FINETUNED), champions.finetune_tokens
    ft_served, ft_why = gate_serves(
        data, OVERRIDING_TASKS["features.review_sentiment"], "3class", SENTIMENT_FINETUNED
    )
    vec = encoder.encode(masked_text, "passage", timeout=timeout) if encoder is not None else None
    usable = head is not None and vec is not None and getattr(head, "n_features_in_", len(vec)) == len(vec)
    if finetuned is not None and tokens is not None and ft_served:
        from ecom_pipeline.ml.text.finetune import predict_proba

        version, used = champions.models[SENTIMENT_FINETUNED].version, SENTIMENT_FINETUNED
        probs, classes = predict_proba(finetuned, tokens, [masked_text])[0], range(len(SENTIMENT_CLASSES))
    elif usable and blocked is None:
        version, used = champions.models[SENTIMENT].version, SENTIMENT
        probs, classes = head.predict_proba(vec[None])[0], head.classes_
    elif baseline is not None:  # no head, gated, or trained on another embedding model: the TF-IDF baseline
        version, used = champions.models[SENTIMENT_BASELINE].version, SENTIMENT_BASELINE
        probs, classes = baseline.predict_proba([masked_text])[0], baseline.classes_
    else:
        raise LookupError(
            "no sentiment model is loaded (neither the champion nor its baseline): "
            + "; ".join(f"{n}: {e}" for n, e in champions.errors.items())
        )
    p = {c: 0.0 for c in SENTIMENT_CLASSES}
    for j, cls in enumerate(classes):
        p[SENTIMENT_CLASSES[int(cls)]] = float(probs[j])
    label = max(p, key=p.get)
    intent, intent_sim = "other", None
    if intents is not None and vec is not None:
        names, mat = intents
        sims = mat @ vec
        intent, intent_sim = names[int(np.argmax(sims))], float(np.max(sims))
    if label == "positive":
        intent = "praise"
        team, priority = "none", "none"
    else:
        team, priority = ROUTES.get(intent, ROUTES["other"])
        if label == "negative":
            priority = ESCALATE[priority]
    return {
        "sentiment": {
            "label": label,
            "probabilities": {k: round(v, 4) for k, v in p.items()},
            "model": used,
            "version": version,
            "gate": None if used == SENTIMENT_FINETUNED else blocked,
            "finetuned": None if finetuned is None else ft_why,  # why the fine-tune serves or not
        },
        "intent": {"label": intent, "similarity": None if intent_sim is None else round(intent_sim, 4)},
        "routing": {"team": team, "priority": priority},
        "masked_text": masked_text,
    }


# ----------------------------------------------------------------------------------------------- similar


def similar_by_id(data: ServingData, product_id: str, k: int) -> dict | None:
    pre = data.similar.get(product_id)
    if pre:
        items, basis = pre[:k], "serving.similar_products"
    elif data.fused.vector(product_id) is not None:
        items, basis = (
            data.fused.top_k(data.fused.vector(product_id), k, exclude={product_id}),
            "product_embeddings",
        )
    else:
        return None
    return {
        "product_id": product_id,
        "basis": basis,
        "items": [{"product_id": p, "name": data.name(p), "score": round(s, 6)} for p, s in items],
    }


def similar_by_vector(data: ServingData, index_name: str, vec: np.ndarray, k: int) -> list[dict]:
    index = getattr(data, index_name)
    return [{"product_id": p, "name": data.name(p), "score": round(s, 6)} for p, s in index.top_k(vec, k)]


# ---------------------------------------------------------------------------------------------- forecast


def _records(frame: pd.DataFrame) -> list[dict]:
    def plain(v):
        if isinstance(v, (pd.Timestamp, datetime)):
            return str(v.date())
        v = v.item() if isinstance(v, np.generic) else v  # numpy scalars are not JSON
        return None if isinstance(v, float) and math.isnan(v) else v

    return [{k: plain(v) for k, v in row.items()} for row in frame.to_dict("records")]


def forecast(data: ServingData, series_id: str, recent_days: int = 7) -> dict | None:
    fc = data.forecasts
    rows = fc[fc["series_id"] == series_id] if len(fc) else fc
    an = data.anomalies
    arows = an[an["series_id"] == series_id] if len(an) else an
    if not len(rows) and not len(arows) and series_id not in data.daily_last:
        return None
    model, gate = None, None
    if len(rows):
        best = rows[rows["is_best"].astype(bool)]
        model = str(best["model"].iloc[0]) if len(best) else None
        gate = gate_block(data, GATED_TABLES["serving.forecasts"][0], series_id, model) if model else None
        if gate is not None or model is None:
            # the batch gate would serve the simple baseline: the seasonal-naive rows when present
            naive = rows[rows["model"].astype(str).str.contains("naive")]
            chosen = naive if len(naive) else rows.iloc[0:0]
            model = str(naive["model"].iloc[0]) if len(naive) else None
        else:
            chosen = best
        points = _records(
            chosen[[c for c in ("date", "step", "yhat", "lo", "hi", "interval") if c in chosen]].sort_values(
                "date"
            )
        )
    else:
        points = []
    last = data.daily_last.get(series_id)
    recent = []
    if len(arows):
        end = pd.Timestamp(last) if last else pd.to_datetime(arows["date"]).max()
        recent_rows = arows[pd.to_datetime(arows["date"]) > end - pd.Timedelta(days=recent_days)]
        recent = _records(recent_rows.sort_values("date"))
    status = "anomalous" if recent else "normal"
    return {
        "series_id": series_id,
        "model": model,
        "gate": gate,
        "forecast": points,
        "anomaly": {
            "status": status,
            "window_days": recent_days,
            "last_day": last,
            "recent": recent,
            "anomalies_total": len(arows),
        },
    }


def parse_ts(value: str | None, now: datetime) -> datetime:
    if not value:
        return now
    ts = pd.Timestamp(value)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.to_pydatetime()
