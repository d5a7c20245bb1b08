"""Noise profiles: the runs of kind ``calibration`` (``benchmarks/calibrate.py``), the latest
one of a machine label and session mode read back, and whether it still describes a session."""
from __future__ import annotations

from tracking.clock import timed
from tracking.read import read_json_artifact
from tracking.store import Store, search_frame


@timed
def latest_profile(store: Store, label: str, mode: str) -> dict | None:
    """The newest FINISHED calibration of machine ``label`` made of ``mode`` sessions, as
    ``{"run_id", "started", "sessions", "commit", "versions", "threads", "cells": {cell: {"cut",
    "sigma", "detectable"}}}``, or None."""
    label_q, mode_q = label.replace("'", "''"), mode.replace("'", "''")
    runs = search_frame(store, f"tags.`bpb.kind` = 'calibration' and tags.`bpb.machine` = '{label_q}' and "
                               f"params.mode = '{mode_q}' and attributes.status = 'FINISHED'",
                        order_by=["attributes.start_time DESC"], max_results=1)
    if runs.empty:
        return None
    row = runs.iloc[0]
    saved = read_json_artifact(store, row["run_id"], "calibration/calibration.json")
    if not saved.get("numbers"):
        return None
    return {"run_id": row["run_id"], "started": str(row["start_time"])[:16], "sessions": int(row["params.count"]),
            "commit": saved.get("measured", {}).get("git_commit", "?"),
            "versions": saved.get("measured", {}).get("versions", {}),
            "threads": saved.get("measured", {}).get("threads", "?"), "cells": saved["numbers"]}


def measured_on(parent) -> dict:
    """What a profile compares with a session: its commit, library versions and threads (from
    the session's parent row)."""
    return {"git_commit": str(parent.get("tags.git_commit", "?")),
            "versions": {k[len("tags.machine."):]: str(v) for k, v in parent.items()
                         if isinstance(k, str) and k.startswith("tags.machine.version_") and isinstance(v, str)},
            "threads": str(parent.get("params.threads", "?"))}


def staleness(profile: dict, parent) -> list[str]:
    """Why ``profile`` is older than the code it judges (another commit, other library versions,
    another thread count), one phrase each; [] when it is not."""
    now = measured_on(parent)
    why = []
    if profile["commit"] != now["git_commit"]:
        why.append(f"measured at commit {_short(profile['commit'])}, this session is at {_short(now['git_commit'])}")
    changed = sorted(k for k in set(profile["versions"]) | set(now["versions"])
                     if profile["versions"].get(k) != now["versions"].get(k))
    if changed:
        why.append("other library versions (" + ", ".join(f"{k.removeprefix('version_')} "
                                                          f"{profile['versions'].get(k, '-')} -> {now['versions'].get(k, '-')}"
                                                          for k in changed[:4]) + ")")
    if profile["threads"] != now["threads"]:
        why.append(f"{profile['threads']} threads then, {now['threads']} now")
    return why


def _short(commit: str) -> str:
    """A commit as its first 8 digits, with the mark of a tree that had uncommitted changes."""
    return commit[:8] + ("-dirty" if commit.endswith("-dirty") else "")
