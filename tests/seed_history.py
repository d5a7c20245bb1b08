"""A seeded history for demos and tests: a throwaway git repository with N empty commits, and
one synthetic session per commit written into a *temporary* store, with known steps injected.
Every session is tagged ``bpb.synthetic = true`` and its host is ``seeded-host``: never point
this at a store that holds real results.

    python -m tests.seed_history FOLDER      # writes FOLDER/repo and FOLDER/mlflow.db
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

HOST = "seeded-host"
# cell -> (kind, impl, preset, dtype, batch, base samples/s, noise, slowdown factor, at commit (1-based))
SPEED = {
    "numba-batch": ("throughput", "hw1-q4", "float32", 256, 400_000, 0.08, 2.0, 17),
    "numpy-batch": ("throughput", "hw1-q4", "float32", 256, 300_000, 0.01, 1 / 0.9, 25),
    "torch-cpu": ("throughput", "hw1-q4", "float32", 256, 250_000, 0.08, 1.0, None),   # flat, noisy
}
ACCURACY = ("accuracy", "numpy-batch", "hw1-q3", "float32", 256)   # 0.870 +- 0.003, -2 points at commit 30
ACC_DROP_AT, ACC_BASE, ACC_DROP = 30, 0.870, 0.020


def git_repo(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    env = {"GIT_AUTHOR_NAME": "seed", "GIT_AUTHOR_EMAIL": "seed@localhost", "GIT_COMMITTER_NAME": "seed",
           "GIT_COMMITTER_EMAIL": "seed@localhost", "PATH": "/usr/bin:/bin"}
    subprocess.run(["git", "init", "-q", "-b", "main", str(folder)], check=True, env=env)
    for i in range(1, n + 1):
        subprocess.run(["git", "-C", str(folder), "commit", "-q", "--allow-empty", "-m", f"commit {i}"],
                       check=True, env=env)
    out = subprocess.run(["git", "-C", str(folder), "rev-list", "--reverse", "HEAD"], check=True,
                         capture_output=True, text=True, env=env)
    return out.stdout.split()


def seed_history(folder: Path, n: int = 40, seed: int = 0) -> dict:
    """Writes ``folder/repo`` and ``folder/mlflow.db``; returns uri, repo and commits."""
    import tracking
    commits = git_repo(folder / "repo", n)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    store = tracking.connect(uri)
    rng = np.random.default_rng(seed)
    base = {"sizes": "784,32,32,10", "activation": "sigmoid", "dataset": "fashion-mnist", "seed": 0}
    for i, commit in enumerate(commits, start=1):
        session = tracking.Session.start(store, name=f"synthetic-{i}", params={"mode": "synthetic"},
                                         tags={"git_commit": commit, "bpb.synthetic": "true", "bpb.host": HOST})
        for impl, (kind, preset, dtype, batch, rate, noise, factor, at) in SPEED.items():
            slowed = rate / (factor if at is not None and i >= at else 1.0)
            med = slowed * float(np.exp(rng.normal(0, noise)))
            if rng.random() < 0.05 and noise > 0.05:
                med *= 0.6                                    # the odd disturbed session
            cell(session, kind, impl, preset, dtype, batch, base,
                 {"samples_per_second_median": med, "samples_per_second_q1": med * (1 - noise),
                  "samples_per_second_q3": med * (1 + noise), "parity_max_error": 2e-7})
        kind, impl, preset, dtype, batch = ACCURACY
        acc = ACC_BASE - (ACC_DROP if i >= ACC_DROP_AT else 0.0) + float(rng.normal(0, 0.003))
        med = 120_000 * float(np.exp(rng.normal(0, 0.05)))
        cell(session, kind, impl, preset, dtype, batch, base | {"target_accuracy": 0.85},
             {"samples_per_second_median": med, "samples_per_second_q1": med * 0.95,
              "samples_per_second_q3": med * 1.05, "test_accuracy": acc, "parity_max_error": 3e-6,
              "time_to_target_seconds": 2.0 * float(np.exp(rng.normal(0, 0.05)))})
        session.finish("FINISHED")
    return {"uri": uri, "repo": folder / "repo", "commits": commits}


def cell(session, kind, impl, preset, dtype, batch, params, metrics):
    name = f"{kind}/{impl}/{preset}/{dtype}/b{batch}/s0"
    run_id = session.open_cell(name, {**params, "preset": preset, "dtype": dtype, "batch_size": batch},
                               {"bpb.cell": name, "bpb.cell_kind": kind, "implementation": impl, "device": "cpu",
                                "bpb.synthetic": "true"})
    session.log(run_id, metrics=metrics)
    session.end_cell(run_id, "FINISHED")


if __name__ == "__main__":
    out = seed_history(Path(sys.argv[1]))
    print(f"seeded {len(out['commits'])} sessions: {out['uri']}, repo {out['repo']}")
