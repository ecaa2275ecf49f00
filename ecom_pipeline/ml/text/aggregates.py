"""SQL for satisfaction aggregates over ``features.review_sentiment`` joined to staging tables."""

from __future__ import annotations

_EMPTY = {
    "product": "SELECT NULL::VARCHAR AS product_id",
    "seller": "SELECT NULL::VARCHAR AS seller_id",
    "category": "SELECT NULL::VARCHAR AS category",
    "state_month": 'SELECT NULL::VARCHAR AS state, NULL::DATE AS "month"',
}
_MEASURES = (
    "count(*)::BIGINT AS reviews, avg(r.score)::DOUBLE AS mean_score, "
    "avg(CASE WHEN s.label = 'negative' THEN 1 ELSE 0 END)::DOUBLE AS share_negative, "
    "avg(s.p_positive)::DOUBLE AS mean_p_positive, avg(s.p_negative)::DOUBLE AS mean_p_negative"
)


def sentiment_aggregate_sql(level: str, have: dict[str, bool]) -> str:
    """A SELECT producing the aggregate for ``level``; an empty typed result when inputs are missing."""
    keys = {
        "product": "r.product_id",
        "seller": "oi.seller_id",
        "category": "p.category",
        "state_month": "c.state, date_trunc('month', r.created_at)::DATE AS month",
    }[level]
    group = {"product": "1", "seller": "1", "category": "1", "state_month": "1, 2"}[level]
    needed = ["staging.reviews", "features.review_sentiment"] + {
        "seller": ["staging.order_items"],
        "category": ["staging.products"],
        "state_month": ["staging.customers"],
    }.get(level, [])
    if not all(have.get(t) for t in needed):
        return (
            f"SELECT * FROM ({_EMPTY[level]}, 0::BIGINT AS reviews, NULL::DOUBLE AS mean_score, "
            "NULL::DOUBLE AS share_negative, NULL::DOUBLE AS mean_p_positive, NULL::DOUBLE AS "
            "mean_p_negative) WHERE false"
        )
    joins = {
        "seller": "JOIN (SELECT order_id, product_id, any_value(seller_id) seller_id FROM "
        "staging.order_items GROUP BY 1, 2) oi ON oi.order_id = r.order_id AND oi.product_id = r.product_id",
        "category": "JOIN staging.products p ON p.product_id = r.product_id",
        "state_month": "JOIN staging.customers c ON c.customer_id = r.customer_id",
    }.get(level, "")
    return (
        f"SELECT {keys}, {_MEASURES} FROM features.review_sentiment s "
        f"JOIN staging.reviews r ON r.review_id = s.review_id {joins} GROUP BY {group} ORDER BY {group}"
    )
