"""Recommendation: interactions, the user-level temporal evaluation, metrics, baselines and models.

Framework-free (no Dagster): the assets in ``ecom_pipeline.assets.recommender`` call these functions.
"""
