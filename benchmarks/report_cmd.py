"""Render a session's report: read the runs back from MLflow, write the files, attach them."""
from __future__ import annotations

import json
from pathlib import Path


def render(uri: str, run_id: str | None, out_dir: str, session=None, log=print) -> dict:
    import reports
    import tracking
    parent, raw_cells, raw_epochs = tracking.read_session(uri, run_id)
    run_id = parent["run_id"]
    cells, epochs = tracking.tidy(raw_cells, raw_epochs)
    examples_path = tracking.download_artifact(uri, run_id, "examples.json")
    examples = json.loads(Path(examples_path).read_text()) if examples_path else {}
    machine = {k[len("tags.machine."):]: v for k, v in parent.items()
               if isinstance(k, str) and k.startswith("tags.machine.")}
    meta = {"run_id": run_id, "peak_gemm_gflops": parent.get("metrics.peak_gemm_gflops", float("nan")),
            "machine": machine, "dataset": parent.get("tags.dataset", "?")}
    paths = reports.write_report(cells, epochs, examples, meta, out_dir)
    client = session.client if session else None
    if client is None:
        import mlflow
        client = mlflow.MlflowClient(uri)
    for path in paths.values():
        client.log_artifact(run_id, str(path), "report")
    log(f"report for session {run_id}: {', '.join(str(p) for p in paths.values())}")
    return paths
