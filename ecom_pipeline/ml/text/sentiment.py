"""Review sentiment: labels from scores, a TF-IDF + logistic-regression baseline, a classifier head on
frozen sentence embeddings, the fine-tuned classifier's module (trained by
:mod:`ecom_pipeline.ml.text.finetune`, top layers on CPU, every layer on CUDA), and their metrics.

Labels: 3-class (1–2 negative, 3 neutral, 4–5 positive) and binary (negative vs positive, 3s dropped).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

SETTINGS = {
    "3class": ("negative", "neutral", "positive"),
    "binary": ("negative", "positive"),
}


def sentiment_labels(scores: pd.Series | np.ndarray, setting: str = "3class") -> np.ndarray:
    """Integer class per review score, indexing ``SETTINGS[setting]``; -1 for rows outside the setting."""
    s = np.asarray(scores, dtype=float)
    if setting == "3class":
        return np.select([s <= 2, s == 3, s >= 4], [0, 1, 2], default=-1).astype(int)
    if setting == "binary":
        return np.select([s <= 2, s >= 4], [0, 1], default=-1).astype(int)
    raise ValueError(f"unknown sentiment setting {setting!r}; expected one of {sorted(SETTINGS)}")


def classification_metrics(y_true, y_pred, classes: tuple[str, ...]) -> dict[str, float]:
    """accuracy, macro_f1 and f1_<class> (conventional names)."""
    from sklearn.metrics import accuracy_score, f1_score

    labels = list(range(len(classes)))
    per = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    out = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
    }
    out.update({f"f1_{c}": float(v) for c, v in zip(classes, per)})
    return out


def tfidf_baseline(C: float = 4.0, max_features: int = 50_000):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        TfidfVectorizer(
            ngram_range=(1, 2),
            min_df=2,
            max_features=max_features,
            sublinear_tf=True,
            strip_accents=None,
            lowercase=True,
        ),
        LogisticRegression(C=C, max_iter=2000, class_weight="balanced"),
    )


def embedding_head(C: float = 2.0):
    """Classifier head on frozen, unit-norm sentence embeddings (multinomial logistic regression)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=3000, class_weight="balanced")


def majority_baseline(y_train) -> int:
    vals, counts = np.unique(np.asarray(y_train), return_counts=True)
    return int(vals[np.argmax(counts)])


@dataclass
class SentimentResult:
    setting: str
    classes: tuple[str, ...]
    n_train: int
    n_test: int
    cutoff: str
    model_metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    majority_metrics: dict[str, float]
    model: object
    baseline: object
    training_path: str
    comparison: object = None  # Comparison: head vs TF-IDF macro-F1, paired bootstrap over test reviews
    decision: object = None  # the serving gate's Decision (task "sentiment", scope = the setting)


# the registered names the serving gate decides between (the serving app looks decisions up by these)
HEAD_NAME = "ecom.sentiment.{setting}"
BASELINE_NAME = "ecom.sentiment_baseline.{setting}"


def fit_and_evaluate(
    frame: pd.DataFrame,
    embeddings: np.ndarray,
    setting: str,
    *,
    time_col: str = "created_at",
    test_fraction: float = 0.2,
    head_C: float = 2.0,
    baseline_C: float = 4.0,
    cutoff=None,
) -> SentimentResult:
    """Time-based split (``ml.splits.temporal_split``), TF-IDF baseline vs embedding head, on one setting.

    ``frame`` has ``doc``, ``score`` and ``time_col``; ``embeddings`` is row-aligned with ``frame``.
    """
    from ecom_pipeline.ml.splits import temporal_split

    classes = SETTINGS[setting]
    y_all = sentiment_labels(frame["score"], setting)
    keep = y_all >= 0
    f = frame.loc[keep].reset_index(drop=True).assign(_row=np.flatnonzero(keep), _y=y_all[keep])
    split = temporal_split(f, time_col, test_fraction=test_fraction, cutoff=cutoff)
    tr, te = split.train, split.test
    if len(tr) == 0 or len(te) == 0 or tr["_y"].nunique() < 2:
        raise ValueError(
            f"{setting}: not enough labelled reviews on both sides of the time split "
            f"(train {len(tr)}, test {len(te)})"
        )
    base = tfidf_baseline(baseline_C).fit(tr["doc"], tr["_y"])
    head = embedding_head(head_C).fit(embeddings[tr["_row"]], tr["_y"])
    maj = majority_baseline(tr["_y"])
    y_te = te["_y"].to_numpy()
    p_head, p_base = head.predict(embeddings[te["_row"]]), base.predict(te["doc"])
    comparison = macro_f1_comparison(y_te, p_head, p_base)
    from ecom_pipeline.ml.serving_gate import decide

    return SentimentResult(
        setting,
        classes,
        len(tr),
        len(te),
        str(split.cutoff),
        classification_metrics(y_te, p_head, classes),
        classification_metrics(y_te, p_base, classes),
        classification_metrics(y_te, np.full(len(te), maj), classes),
        head,
        base,
        "frozen_embeddings_head",
        comparison,
        decide(
            "sentiment",
            setting,
            HEAD_NAME.format(setting=setting),
            BASELINE_NAME.format(setting=setting),
            comparison,
        ),
    )


def macro_f1_comparison(y, candidate_pred, baseline_pred, n_boot: int = 1000):
    """Macro-F1 of two classifiers' predictions on the same test reviews, paired bootstrap over reviews (the
    binary 0.950 vs 0.943 gap on Olist is inside its interval: no difference)."""
    from sklearn.metrics import f1_score

    from ecom_pipeline.ml.evaluation import scorer_comparison

    return scorer_comparison(
        y,
        candidate_pred,
        baseline_pred,
        lambda yy, pp: f1_score(yy, pp, average="macro", zero_division=0),
        metric="macro_f1",
        higher_is_better=True,
        needs_both_classes=True,
        n_boot=n_boot,
    )


def _module_base():
    import torch.nn

    return torch.nn.Module


class FinetunedClassifier(_module_base()):
    """A Hugging Face encoder + linear head on mean-pooled states (the full fine-tuning path)."""

    def __init__(self, backbone, dim: int, k: int, prefix: str = "passage"):
        import torch

        super().__init__()
        self.backbone = backbone
        self.head = torch.nn.Linear(dim, k)
        self.prefix = prefix  # the encoder's input prefix it was trained with ("passage" / "query")

    def forward(self, input_ids, attention_mask):
        from ecom_pipeline.ml.encoders.pooling import mean_pool

        h = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(mean_pool(h, attention_mask))

    def safe_config(self) -> dict:
        """The backbone's architecture (its Hugging Face config, no weights) and the head's shape."""
        return {
            "backbone_config": self.backbone.config.to_dict(),
            "dim": self.head.in_features,
            "k": self.head.out_features,
            "prefix": self.prefix,
            # sentence encoders are often loaded without the pooler head (mean pooling is used instead)
            "backbone_pooler": getattr(self.backbone, "pooler", None) is not None,
        }

    @classmethod
    def from_config(cls, cfg: dict) -> FinetunedClassifier:
        """The architecture with random weights (nothing downloaded); the registered state dict fills them
        in."""
        from transformers import AutoConfig, AutoModel

        backbone_cfg = dict(cfg["backbone_config"])
        config = AutoConfig.for_model(backbone_cfg.pop("model_type"), **backbone_cfg)
        backbone = AutoModel.from_config(config)
        if not cfg.get("backbone_pooler", True) and hasattr(backbone, "pooler"):
            backbone.pooler = None  # as trained: the state dict has no pooler weights
        return cls(backbone, int(cfg["dim"]), int(cfg["k"]), prefix=cfg.get("prefix", "passage"))
