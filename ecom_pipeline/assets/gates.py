"""The promotion gate as a blocking Dagster asset check (the verdict itself is framework-free:
:func:`ecom_pipeline.ml.registry.gate_verdict`)."""

from __future__ import annotations

import dagster as dg

from ecom_pipeline.ml.registry import gate_verdict, registry_summary, skip_reason


def promotion_gate_check(asset_key, name: str, *, check_name: str = "promotion_gate"):
    """A blocking Dagster asset check for a model asset that registers ``name``.

    Attach it in the model module's ``build()``: ``asset_checks=[promotion_gate_check(key, "ecom.x")]``.
    It fails (ERROR, which blocks downstream serving assets in the same run) when there is no usable
    champion, warns when the champion loses to its baseline, and passes with a warning description when the
    asset's materialisation says it skipped training (``skipped``/``message`` metadata).
    """

    @dg.asset_check(
        asset=asset_key,
        name=check_name,
        blocking=True,
        required_resource_keys={"mlflow"},
        description=f"promotion gate for {name}: a champion with a recorded score exists "
        "(ERROR, blocks downstream) and beats its baseline (WARN)",
    )
    def _gate(context):  # unannotated: this module uses postponed annotations
        client = context.resources.mlflow.client()
        rows = {r["model"]: r for r in registry_summary(client)}
        row = rows.get(name)
        event = context.instance.get_latest_materialization_event(dg.AssetKey.from_coercible(asset_key))
        materialization = event.asset_materialization if event is not None else None
        skipped = skip_reason(materialization.metadata if materialization is not None else None)
        passed, severity, description = gate_verdict(row, name, skipped)
        meta = {
            k: v
            for k, v in (row or {}).items()
            if k
            in (
                "champion_version",
                "latest_version",
                "metric",
                "champion_value",
                "baseline_value",
                "latest_promoted",
            )
            and v is not None
        }
        return dg.AssetCheckResult(
            passed=passed,
            severity=dg.AssetCheckSeverity[severity],
            description=description,
            metadata={k: str(v) for k, v in meta.items()},
        )

    return _gate
