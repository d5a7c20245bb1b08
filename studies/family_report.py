"""What ``python -m studies families`` writes: the console table, ``summary.md`` and
``summary.json`` under ``reports/out/families/``, and one MLflow run per contest (tag
``bpb.kind = families``; the runs of one command share ``bpb.families.id``)."""
from __future__ import annotations

import json
import re
import socket
import statistics
import time
from pathlib import Path

from benchmarks.cells import load_average
from benchmarks.inventory import inventory
from reports.families import markdown
from studies.family_worker import PASSES


def facts(run, names) -> dict:
    """What the summary states about the run before it starts: the machine, load, rounds."""
    return {"id": f"families-{time.strftime('%Y%m%d-%H%M%S')}-{socket.gethostname()}", "contests": names,
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "load_start": load_average(),
            "rounds": run.rounds, "seconds": run.seconds, "passes": PASSES, "machine": inventory()}


def line(contest: str, r: int, rounds: int, c, res: dict, seconds: float) -> str:
    """The progress line of one measurement (round ``r``, 0-based, of ``rounds``)."""
    head = f"  {contest} r{r + 1}/{rounds}  {c.label:<24}"
    if "unavailable" in res:
        return f"{head} not available: {res['unavailable']}"
    if "error" in res:
        return f"{head} FAILED: {res['error']}"
    what = (f"{res['value']:>9.1f} GFLOP/s" if c.mode == "probe" else f"{res['samples_per_second']:>9,.0f} samples/s"
            + (f"  Adam {res['adam_share']:.1%}" if "adam_share" in res else ""))
    return (f"{head} {what}  threads {res['threads']}  rss {res['peak_rss_mb']:.0f} MB  "
            f"load {res['load_before']:.2f}->{res['load_after']:.2f}  {seconds:.1f} s")


def write(start: dict, contests: dict, defs: dict, folder: Path, failed: list) -> list[Path]:
    start.update(ended=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), load_end=load_average())
    folder.mkdir(parents=True, exist_ok=True)
    md, js = folder / "summary.md", folder / "summary.json"
    md.write_text(markdown(start, contests, defs, failed))
    js.write_text(json.dumps({"run": start, "contests": contests, "failed": failed}, indent=2, default=str))
    return [md, js]


def _key(text: str) -> str:
    return re.sub(r"[^\w.\-]+", "_", text.replace(" / ", "_vs_"))


def track(uri, start: dict, contests: dict, defs: dict, paths: list[Path]) -> str:
    """One MLflow run per contest: figures as metrics (per round at step r), the verdict as a tag."""
    import tracking
    store = tracking.connect(tracking.resolve_uri(uri))
    inv = start["machine"]
    for name, out in contests.items():
        v = out["verdict"]
        run = tracking.Session.start(store, name=f"families {name} · {start['started'][:16]}", params={
            "contest": name, "rounds": start["rounds"], "seconds": start["seconds"], "passes": start["passes"],
            "target": v["target"], "rule": v["rule"]}, tags={
            "bpb.kind": "families", "bpb.families.id": start["id"], "bpb.families.contest": name,
            "bpb.families.verdict": v["verdict"], "git_commit": inv["git_commit"],
            "mlflow.note.content": f"{v['title']}: {v['verdict']} ({v['value']} against {v['target']})",
            **{f"machine.{k}": x for k, x in inv.items()}})
        metrics = {"load_average_start": start["load_start"], "load_average_end": start["load_end"]}
        if v["value"] is not None:
            metrics["value"] = v["value"]
        for row in v["comparisons"]:
            for k in ("value", "ratio_of_medians", "min", "max"):
                if row.get(k) is not None:
                    metrics[f"{_key(row['comparison'])}.{k}"] = row[k]
        for label, rounds in out["results"].items():
            done = [r for r in rounds if r]
            if done:
                metrics[f"{_key(label)}.peak_rss_mb"] = max(r["peak_rss_mb"] for r in done)
                metric = "value" if "value" in done[0] else "samples_per_second"
                metrics[f"{_key(label)}.{metric}_median"] = statistics.median(r[metric] for r in done)
            for step, r in enumerate(rounds, start=1):
                if r:
                    run.log(metrics={f"{_key(label)}.{k}": r[k] for k in ("samples_per_second", "value", "adam_share",
                                                                          "load_before", "load_after") if k in r},
                            step=step)
        run.log(metrics=metrics, tags={f"unavailable.{_key(k)}": why[:5000] for k, why in out["unavailable"].items()})
        run.log_dict(out, f"families/{name}.json")
        for path in paths:
            run.log_artifact(path, "families")
        run.finish("FINISHED")
    return (f"MLflow: {len(contests)} runs in {store.display}, tagged bpb.kind = families and "
            f"bpb.families.id = {start['id']}")
