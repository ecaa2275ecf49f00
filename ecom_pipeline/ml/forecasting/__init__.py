"""Demand forecasting: daily series, calendar features, metrics, rolling-origin backtests, seasonal naive,
SARIMA, a global LSTM, and anomaly detection on forecast residuals.  Framework-free (no Dagster)."""
