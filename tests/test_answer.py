"""Is it correct? The accuracy agreement (reports/agreement.py) on seeded fixture frames whose
test accuracies were measured on this project's implementations (hw1-q3 float32 batch 256,
hw1-q4 float64 batch 1), clean and with numpy-batch's learning rate cut to a fifth after its
first step (tests/faults.py ``lr_schedule_bug_numpy_batch``); and a cell the time budget cut is
never crowned, or judged, silently. And the report's answer at a glance (reports/answer.py):
it says first which implementation is fastest and whether it is correct, then flags noise,
skips, anomalies and budget cuts; the headline crowns only a correct cell and calls a tie a
tie. No training here."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import impls
from reports import agreement, answer
from reports.render import write_report
from tracking.tidy import CELL_COLUMNS

Q3 = ("hw1-q3", "float32", 256, "784-256-128-64-10 relu")
Q4 = ("hw1-q4", "float64", 1, "784-32-32-10 sigmoid")

# final test accuracy per implementation and seed, as measured
QUICK_Q3 = {"numpy-batch": (0.8048, 0.8056, 0.7756), "numba-batch": (0.8052, 0.8052, 0.7742),
            "torch-cpu": (0.8048, 0.8065, 0.7756), "jax-cpu": (0.8114, 0.7990, 0.7782),
            "sklearn-mlp": (0.8076, 0.7970, 0.7742)}              # one epoch on 20,000 samples
QUICK_Q4 = dict.fromkeys(["numpy-sample", "numpy-batch", "numba-sample", "numba-batch", "torch-cpu"], (0.5435,))
GATE_Q3 = {"numpy-batch": (0.8327, 0.8035, 0.8241), "numba-batch": (0.8323, 0.8058, 0.8241),
           "torch-cpu": (0.8347, 0.8006, 0.8241)}                # two epochs on 20,000 samples
FULL_Q3 = {"numpy-batch": (0.8716, 0.8735), "numba-batch": (0.8767, 0.8715), "torch-cpu": (0.8741, 0.8694),
           "jax-cpu": (0.8726, 0.8732), "sklearn-mlp": (0.8736, 0.8711)}      # five epochs on 60,000 samples
FULL_Q4 = dict.fromkeys(["numpy-sample", "numpy-batch", "numba-sample", "numba-batch", "torch-cpu"], (0.8241,))
# numpy-batch with the learning-rate fault, same schedules
FAULTY = {"quick_q3": (0.7709, 0.7760, 0.7774), "quick_q4": (0.3345,), "gate_q3": (0.8063, 0.8126, 0.8172),
          "full_q3": (0.8632, 0.8648), "full_q4": (0.6642,)}
CUT = ("trained on 17,664 of 60,000 samples per epoch: the full 5 epoch(s) projected 608 s at 605 samples/s, "
       "over the 180 s cell budget")


def cells(*groups, rates=None, budget=None) -> pd.DataFrame:
    """A tidy cells frame (``tracking.CELL_COLUMNS``): one finished accuracy cell per
    implementation and seed of each ``(config, {impl: accuracies by seed})``; ``rates``: impl
    -> samples/s (default 10,000); ``budget``: impl -> its bpb.budget tag."""
    rows = []
    for (preset, dtype, batch, network), accuracies in groups:
        for impl, values in accuracies.items():
            for seed, value in enumerate(values):
                rate = (rates or {}).get(impl, 10_000.0)
                rows.append({"cell": f"accuracy/{impl}/{preset}/{dtype}/b{batch}/s{seed}", "kind": "accuracy",
                             "impl": impl, "preset": preset, "network": network, "dtype": dtype,
                             "batch_size": batch, "seed": seed, "status": "FINISHED", "test_accuracy": value,
                             "samples_per_second_median": rate, "samples_per_second_q1": 0.98 * rate,
                             "samples_per_second_q3": 1.02 * rate, "parity_max_error": 1e-6,
                             "budget": (budget or {}).get(impl)})
    frame = pd.DataFrame(rows).reindex(columns=CELL_COLUMNS)
    return answer.complete(frame.astype({"batch_size": "Int64", "seed": "Int64"}))


def said(frame: pd.DataFrame) -> str:
    """Everything the report says about correctness: the headline and the accuracy notes."""
    return "\n".join(answer.headline(frame, impls.SPEEDUP_BASE) + answer.accuracy_spread(frame))


def with_fault(accuracies: dict, values) -> dict:
    return {**accuracies, "numpy-batch": values}


CLEAN = {"quick": cells((Q3, QUICK_Q3), (Q4, QUICK_Q4)), "gate": cells((Q3, GATE_Q3), (Q4, QUICK_Q4)),
         "full": cells((Q3, FULL_Q3), (Q4, FULL_Q4))}


@pytest.mark.parametrize("mode", sorted(CLEAN))
def test_a_clean_session_of_any_mode_agrees(mode):
    text = said(CLEAN[mode])
    assert "DISAGREE" not in text and "DIFFERS" not in text, text
    assert agreement.RULE in text                                       # the rule, stated
    assert "they agree" in text and "tolerance 0.0100 (the float32 floor)" in text
    if mode == "quick":
        # the peers' own rule: sklearn-mlp within twice the float32 tolerance (0.0086 on seed 1),
        # out of the median with jax-cpu: the three families set it
        assert "sklearn-mlp ends at 0.7970, 0.0086 from the median: it agrees (its own rule: within 0.0200" in text
        assert "seed 1: 3 implementations end at test accuracy 0.8052-0.8065, median 0.8056" in text


@pytest.mark.parametrize("mode, frame", [
    ("quick", cells((Q3, with_fault(QUICK_Q3, FAULTY["quick_q3"])), (Q4, with_fault(QUICK_Q4, FAULTY["quick_q4"])))),
    ("gate", cells((Q3, with_fault(GATE_Q3, FAULTY["gate_q3"])), (Q4, with_fault(QUICK_Q4, FAULTY["quick_q4"])))),
    ("full", cells((Q3, with_fault(FULL_Q3, FAULTY["full_q3"])), (Q4, with_fault(FULL_Q4, FAULTY["full_q4"])))),
])
def test_a_learning_rate_fault_in_one_implementation_is_named(mode, frame):
    text = said(frame)
    assert "hw1-q4 f64 batch 1: the test accuracies DISAGREE: numpy-batch ends at" in text, text
    verdicts = agreement.judge(frame)
    assert set(verdicts.loc[verdicts["verdict"] == "DISAGREES", "impl"]) == {"numpy-batch"}
    assert "hw1-q4 f64 batch 1, seed 0: 5 implementations end at" in text and "DISAGREE: numpy-batch" in text


def test_the_tolerance_widens_with_the_drift_the_session_measured_and_not_for_one_outlier():
    # five implementations spread over 0.04 on one seed: the session's own drift, not a fault
    spread = dict(zip(["a", "b", "c", "d", "e"], [(0.80,), (0.81,), (0.82,), (0.83,), (0.84,)]))
    judged = agreement.judge(cells((Q3, spread)))
    assert (judged["verdict"] == "agrees").all() and judged["tolerance"].iat[0] == pytest.approx(3 * 1.4826 * 0.01)
    assert "(3 x the measured robust SD 0.0148)" in "\n".join(answer.accuracy_spread(cells((Q3, spread))))
    # four that coincide and one far off: the outlier cannot widen the bound for itself
    outlier = {**dict.fromkeys(["a", "b", "c", "d"], (0.82,)), "e": (0.70,)}
    judged = agreement.judge(cells((Q3, outlier))).set_index("impl")
    assert judged.loc["e", "verdict"] == "DISAGREES" and judged.loc["e", "tolerance"] == agreement.FLOOR["float32"]


def test_two_implementations_apart_are_named_together():
    text = "\n".join(answer.accuracy_spread(cells((Q3, {"a": (0.80,), "b": (0.83,)}))))
    assert "DISAGREE: a 0.8000 is 0.0150 from the median, b 0.8300 is 0.0150 from the median" in text
    assert "which one is off cannot be told" in text


def test_a_cut_cell_is_never_crowned_silently_nor_judged():
    # the full session that crowned jax-cpu: its projection counted the compile, it trained on
    # 17,664 of 60,000 samples and ended 0.0275 below the others; on the epochs it is fastest
    q3 = {**FULL_Q3, "jax-cpu": (0.8492,)}
    frame = cells((Q3, q3), rates={"jax-cpu": 90_000.0}, budget={"jax-cpu": CUT})
    line = next(x for x in answer.headline(frame, impls.SPEEDUP_BASE) if x.startswith("hw1-q3 f32 batch 256:"))
    assert "**jax-cpu** is fastest" in line
    assert "(accuracy cells' epochs; trained on 17,664 of 60,000 samples (budget))" in line
    assert ("test accuracy 0.8492 (trained on 17,664 of 60,000 samples (budget)): left out of the accuracy "
            "agreement") in line
    text = said(frame)
    assert "DIFFERS" not in text and "DISAGREE" not in text, text
    assert ("hw1-q3 f32 batch 256, seed 0: jax-cpu (0.8492) left out of the agreement: trained on 17,664 of 60,000 "
            "samples (budget)") in text
    # cut cells stay out of the median: the three uncut ones set it
    assert "3 implementations end at test accuracy 0.8716-0.8767, median 0.8741" in text


def test_a_cut_winner_names_every_cut_and_a_cell_stopped_early():
    both = CUT + "; stopped after epoch 2 of 5: 170 s spent, another epoch would pass the 180 s cell budget"
    assert agreement.budget_words(both) == ("trained on 17,664 of 60,000 samples (budget); "
                                            "stopped after epoch 2 of 5 (budget)")
    assert agreement.budget_words(np.nan) == agreement.budget_words("") == ""
    frame = cells((Q3, FULL_Q3), rates={"torch-cpu": 90_000.0}, budget={"torch-cpu": both})
    line = next(x for x in answer.headline(frame, impls.SPEEDUP_BASE) if x.startswith("hw1-q3 f32 batch 256:"))
    assert "**torch-cpu** is fastest" in line and "stopped after epoch 2 of 5 (budget)" in line


FIXTURE = Path(__file__).parent / "fixtures" / "report_session.json"



@pytest.fixture
def session():
    payload = json.loads(FIXTURE.read_text())
    return answer.complete(pd.DataFrame(payload["cells"])), pd.DataFrame(payload["epochs"]), payload



def ok_throughput(cells, impl):
    return cells[(cells["kind"] == "throughput") & (cells["impl"] == impl) & (cells["status"] == "FINISHED")]



def test_the_report_answers_first_and_flags_noise_skips_anomalies_budget_and_load(session, tmp_path):
    cells, epochs, payload = session
    batch = ok_throughput(cells, "numpy-batch").query("dtype == 'float32'").sort_values("batch_size")
    small, big = batch.index[0], batch.index[1]
    # an anomaly: the larger batch slower than the smaller one, IQRs apart
    cells.loc[big, ["samples_per_second_q1", "samples_per_second_median", "samples_per_second_q3"]] = (
        cells.loc[small, "samples_per_second_q1"] * pd.Series([0.3, 0.4, 0.5]).to_numpy())
    noisy_cell = ok_throughput(cells, "numba-sample").index[0]
    cells.loc[noisy_cell, "samples_per_second_relative_iqr"] = 0.6
    cells.loc[cells.index[0], "load_average_end"] = 5.0
    cut = cells[cells["kind"] == "accuracy"].index[0]
    cells.loc[cut, "budget"] = "trained on 1,000 of 60,000 samples per epoch"
    meta = {**payload["meta"], "machine": {**payload["meta"].get("machine", {}), "cpu_cores": 2}}
    paths = write_report(cells, epochs, payload["examples"], meta, tmp_path,
                         skipped=["torch-cuda: no CUDA device (torch.cuda.is_available() is False)"], speedup_base=impls.SPEEDUP_BASE, peers=impls.PEERS)
    md = paths["markdown"].read_text()
    sections = [line for line in md.splitlines() if line.startswith("## ")]
    assert sections[0] == "## Which implementation is fastest, and is it correct?"
    assert sections[1].startswith("## Flags (") and sections[2] == "## Cells"
    answer_lines = md.split(sections[0])[1].split(sections[1])[0].strip().splitlines()
    assert answer_lines and all("is fastest" in line or "only " in line for line in answer_lines)
    flags = md.split(sections[1])[1].split(sections[2])[0]
    assert f"noisy: {cells.loc[noisy_cell, 'cell']}: IQR of the repeats is 60% of the median" in flags
    assert f"batch {cells.loc[big, 'batch_size']}" in flags and "throughput falls as the batch grows" in flags
    assert f"{cells.loc[cells.index[0], 'cell']}: measured under load (1-minute load average up to 5.0 on 2 cores" in flags
    assert f"budget: {cells.loc[cut, 'cell']}: trained on 1,000" in flags
    assert "skipped: torch-cuda: no CUDA device" in flags
    assert "above 25% of their median" in md                             # the threshold, stated
    assert answer.ACCURACY_NOTE in md
    html = paths["html"].read_text()
    assert html.index("is fastest") < html.index("<table")               # the answer before the evidence



def test_the_headline_names_only_a_correct_cell_and_calls_a_tie_a_tie(session):
    cells, _, _ = session
    group = cells[(cells["kind"] == "throughput") & (cells["status"] == "FINISHED") & (cells["dtype"] == "float32")
                  & (cells["batch_size"] == 1)].sort_values("samples_per_second_median", ascending=False)
    winner, runner_up = group.iloc[0], group.iloc[1]
    line = next(x for x in answer.headline(cells, impls.SPEEDUP_BASE) if x.startswith("hw1-q4 f32 batch 1:"))
    assert f"**{winner['impl']}** is fastest" in line and "parity passed" in line
    failed = cells.copy()
    failed.loc[group.index[0], "status"] = "FAILED"                      # e.g. it broke parity
    line = next(x for x in answer.headline(failed, impls.SPEEDUP_BASE) if x.startswith("hw1-q4 f32 batch 1:"))
    assert f"**{runner_up['impl']}** is fastest" in line and winner["impl"] + "**" not in line
    tied = cells.copy()
    tied.loc[group.index[1], ["samples_per_second_q3"]] = winner["samples_per_second_q1"] * 1.01
    assert "a tie within noise" in next(x for x in answer.headline(tied, impls.SPEEDUP_BASE) if x.startswith("hw1-q4 f32 batch 1:"))

