"""A regression-gate session: run the gate's matrix (or re-read a finished gate session), judge
it against the baseline (``benchmarks/regress.py``), print the table, log the verdicts onto
the session's run, and with ``update`` rewrite the baseline by its one rule.

A gate never passes on nothing: a missing or malformed baseline, a session that is not a
complete gate session, or zero checks is a usage error (exit 2), not a pass.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import tracking
from benchmarks import baseline as baseline_file, regress, update_rule
from benchmarks.config import UsageError
from benchmarks.plan import BenchOptions, gate_options
from benchmarks.session import SessionSettings, run_session

CHECKS = ("accuracy", "parity", "speed")


@dataclass(frozen=True)
class GateOptions:
    """What the gate runs and judges. Defaults: every available CPU implementation, both
    presets on a shortened schedule, three seeds, speed on hw1-q4's network in float32."""
    impls: tuple[str, ...] = ()
    dataset: str = "fashion-mnist"
    seeds: tuple[int, ...] = (0, 1, 2)
    speed_repeats: int = 7
    speed_seconds: float = 0.2
    # half-width of a new speed band, as a fraction of the median ratio. Shared machines swing
    # 5-50% between runs (docs/performance.md), so the default only flags slowdowns of 2x and
    # more; on a dedicated machine --speed-band 0.1 is reasonable.
    speed_band: float = regress.MIN_BAND
    checks: tuple[str, ...] = CHECKS

    def matrix(self) -> BenchOptions:
        m = gate_options(self.impls, self.dataset, self.seeds, self.speed_repeats, self.speed_seconds)
        # without the speed check the throughput cells are there for their parity only
        return m if "speed" in self.checks else replace(m, repeats=3, repeat_seconds=0.02)

    def in_scope(self, key: str) -> bool:
        """Whether this run of the gate covers a baseline key (``--impl`` and check subsets)."""
        if self.impls and key.split("/")[-3] not in self.impls:
            return False
        if key.split("/")[-4] != self.dataset:
            return False
        wanted = ("speed", "parity") if key.startswith("speed/") else ("accuracy", "parity")
        return any(c in self.checks for c in wanted)

    def record(self) -> dict:
        """What the baseline file says about how it was made."""
        return {"dataset": self.dataset, "seeds": list(self.seeds), "speed_repeats": self.speed_repeats,
                "schedule": [list(s) for s in gate_options().schedule]}


def matrix_differences(parent, matrix: BenchOptions) -> list[str]:
    """What a session's recorded options say differently from the gate's ``matrix`` (schedule,
    seeds, dataset): a session run another way cannot be judged against the baseline."""
    wanted = {"schedule": ",".join(map(str, matrix.schedule)), "seeds": ",".join(map(str, matrix.seeds)),
              "dataset": matrix.dataset}
    return [f"{key} is {parent.get(f'params.option.{key}')!r}, the gate's {value!r}"
            for key, value in wanted.items() if parent.get(f"params.option.{key}") != value]


def gate_cuts(store: tracking.Store, parent, cells, baseline: dict, label: str) -> tuple[dict, str]:
    """(baseline key -> (calibrated cut, detectable slowdown), the line that says where they come
    from): the latest noise profile of the session's machine for gate sessions (``calibrate
    --gate``), for the speed entries the baseline says were measured on that machine; a profile
    says nothing about the step from another machine's baseline to this one."""
    from benchmarks.compare import profile_line, uncalibrated_line
    from reports.text import one_line
    profile = tracking.profiles.latest_profile(store, label, "regress")
    if profile is None:
        return {}, uncalibrated_line(label, "regress", "per-cell speed cuts") + "; each speed check has its band"
    keys = {"speed/" + regress.cell_key(row): row["cell"] for _, row in cells[cells["kind"] == "throughput"].iterrows()}
    speed = {k: e["speed"] for k, e in baseline["cells"].items() if "speed" in e}
    here = {k: keys[k] for k, e in speed.items() if e.get("machine") == label and keys.get(k) in profile["cells"]}
    cuts = {k: (profile["cells"][c]["cut"], profile["cells"][c]["detectable"]) for k, c in here.items()}
    other = sorted({one_line(str(e.get("machine", "an unrecorded machine"))) for k, e in speed.items()
                    if k in keys and e.get("machine") != label})
    return cuts, (profile_line(profile, label, "regress", parent, "profiled") + f"; {len(cuts)} speed checks judged by "
                  "their calibrated cut" + (f", the others by their band: their baseline was measured on "
                                            f"{', '.join(other)}" if other else ""))


def run_gate(options: GateOptions, baseline_path: Path, speed: str = "warn", update: bool = False, *,
             store: tracking.Store, baseline: dict | None = None, threads: int | None = None, data_dir=None,
             download: bool = False, run_id: str | None = None, isolate: bool = True,
             out_dir: str = "reports/out/regress", log=print, machine_label: str | None = None) -> int:
    """Run (or, with ``run_id``, re-read) a gate session, judge it, print and log the verdicts.
    ``baseline``: the file's content when the caller read it already (the CLI reads it before
    it connects the store), else read here. Returns the exit status: 1 when a check fails,
    else 0; UsageError for a gate on nothing."""
    from benchmarks import datasets
    if baseline is None:
        baseline = baseline_file.load_baseline(baseline_path, missing_ok=update)
    if run_id is None:
        data = datasets.load(options.dataset, data_dir, download_ok=download)
        settings = SessionSettings(mode="regress", out_dir=out_dir, threads=threads, isolate=isolate,
                                   data_dir=data_dir, machine_label=machine_label)
        _, run_id = run_session(options.matrix(), data, store, settings, log=log)
    parent, raw_cells, raw_epochs = tracking.read_session(store, run_id)
    meta = tracking.session_meta(parent)
    if meta["mode"] != "regress":
        raise UsageError(f"run {run_id} is not a regression-gate session (its mode is {meta['mode']!r}); "
                         "pass the id of a `regress` session's parent run, or run the gate without --run-id")
    if meta["status"] != "FINISHED":
        raise UsageError(f"gate session {run_id} is {meta['status']}, not complete: it cannot be judged")
    differ = matrix_differences(parent, options.matrix())
    if differ:
        raise UsageError(f"session {run_id} did not run the gate's matrix: its {'; its '.join(differ)}. Its accuracies "
                         "are not comparable with the baseline's; run the gate without --run-id")
    cells, _ = tracking.tidy(raw_cells, raw_epochs)
    measured = regress.collect(cells, tracking.repeat_series(raw_epochs),
                               tracking.repeat_series(raw_epochs, "speed_ratio"),
                               tracking.repeat_series(raw_epochs, "train_loss"))
    measured = {k: m for k, m in measured.items() if options.in_scope(k)}
    label = tracking.session_label(parent)
    cuts, calibration = gate_cuts(store, parent, cells, baseline, label)
    log(calibration)
    verdicts = regress.judge(measured, baseline, speed, options.checks, options.in_scope, cuts)
    if not verdicts:
        raise UsageError(f"the gate judged nothing (no gated cell ran in session {run_id}, and the baseline "
                         "has no entry in scope): check --impl and that the implementations can run here")
    regress.print_table(verdicts)
    moved: list[str] = []
    if update:
        broken = [f"{k}: {m.failures[0]}" for k, m in measured.items() if m.failures]
        if broken:
            log("not updating the baseline from a session with failed cells:\n  " + "\n  ".join(broken))
            return 1
        new, moved = update_rule.updated_baseline(baseline, measured, verdicts, options.speed_band, options.record(),
                                                  label)
        # under the file's lock, onto the file as it is now: another update's entries stay
        baseline, changed = baseline_file.update(baseline_path, lambda now: update_rule.merged(now, new, moved))
        if changed:
            log(f"baseline {baseline_path} rewritten from session {run_id}"
                + (f"; moved (left their band): {', '.join(moved)}" if moved else ""))
        else:                   # nothing left its band, or the file already holds what would move
            log(f"baseline {baseline_path} unchanged by session {run_id}"
                + (f": the entries that left their band already hold its values ({', '.join(moved)})" if moved else ""))
    # after an update, the exit status is the verdict against the baseline just written
    final = regress.judge(measured, baseline, speed, options.checks, options.in_scope,
                          gate_cuts(store, parent, cells, baseline, label)[0]) if update else verdicts
    failing = [v for v in final if v.failing]
    warned = [v for v in final if v.verdict.startswith("SLOWER")]
    undecided = [v for v in final if v.verdict == "no verdict"]
    result = "fail" if failing else ("warn" if warned or undecided else "pass")
    tracking.annotate(store, run_id, metrics={"regress_failing": len(failing), "regress_checks": len(final)},
                      tags={"regress.result": result},
                      dicts={"regress/verdicts.json": {"baseline": str(baseline_path), "speed": speed,
                                                       "verdicts": [asdict(v) for v in final], "updated": update,
                                                       "verdicts_before_update": [asdict(v) for v in verdicts],
                                                       "moved": moved}})
    log(f"regress: {len(final) - len(failing) - len(undecided)} of {len(final)} checks pass"
        + (f", {len(warned)} speed warning(s)" if warned else "")
        + (f", {len(undecided)} speed check(s) without a verdict" if undecided else "")
        + f" (session {run_id}, baseline {baseline_path}, speed {speed})")
    for v in failing:
        log(f"  FAILED {v.check} of {v.cell}: expected {v.expected}, measured {v.measured}")
    return 1 if failing else 0
