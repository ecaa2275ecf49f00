# The settings a cluster test clears from its own environment before it sets the cluster's (one list for
# every test that starts a LocalCluster).
CLEARED_VARS = (
    "ECOM_WAREHOUSE",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "ECOM_PSEUDONYM_KEY",
    "ECOM_DATA_DIR",
    "ECOM_MAPPING",
    "ECOM_ENV",
    "ECOM_DATA_SOURCE",
    "ECOM_EXECUTOR",
    "ECOM_FAULT_PAUSE",
    "ECOM_SHORT_JOBS_EXECUTOR",
    "DAGSTER_HOME",
)
