"""Online serving (FastAPI): see :mod:`ecom_pipeline.api.app` and docs/serving.md."""
