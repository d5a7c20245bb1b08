"""The report's pages (``reports/render.py``) from the checked-in fixture: markdown set as
HTML, every line of a section on both pages, and the pytest-benchmark table by network."""
import json
import re
from pathlib import Path

import pandas as pd
import pytest

import impls
from reports.render import write_report
from tests.test_reports import with_peers

FIXTURE = Path(__file__).parent / "fixtures" / "report_session.json"


def step(name, impl, batch, **network):
    return {"name": name, "extra_info": {"impl": impl, "dtype": "float32", "batch": batch, **network},
            "stats": {"median": 1e-3 * batch, "iqr": 1e-4 * batch, "rounds": 5}}


Q3 = {"preset": "hw1-q3", "network": "784-256-128-64-10 relu"}
Q4 = {"preset": "hw1-q4", "network": "784-32-32-10 sigmoid"}
SUITE = {"benchmarks": [step("test_train_step[numpy-batch-float32-b1]", "numpy-batch", 1, **Q4),
                        step("test_reference_step[torch-minimal-float32]", "torch-minimal (reference)", 256, **Q3),
                        step("test_train_step[numpy-batch-float32-b256]", "numpy-batch", 256, **Q4),
                        step("test_train_step[torch-cpu-float32-b1]", "torch-cpu", 1)]}   # an older suite's


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    payload = json.loads(FIXTURE.read_text())
    cells, epochs = with_peers(pd.DataFrame(payload["cells"])), pd.DataFrame(payload["epochs"])
    paths = write_report(cells, epochs, payload["examples"], payload["meta"], tmp_path_factory.mktemp("report"),
                         pytest_benchmark=SUITE, speedup_base=impls.SPEEDUP_BASE, peers=impls.PEERS)
    return paths["markdown"].read_text(), paths["html"].read_text()


def test_the_html_shows_code_and_bold_not_their_marks(pages):
    md, page = pages
    run_id = json.loads(FIXTURE.read_text())["meta"]["run_id"]
    assert f"session run `{run_id}`" in md
    assert f"session run <code>{run_id}</code>" in page
    text = re.sub(r"<img[^>]*>", "", page)
    assert "`" not in text and "**" not in text


def test_every_line_of_a_section_with_a_table_is_on_both_pages(pages):
    md, page = pages
    assert "- sklearn-mlp runs at 0.68x numpy-batch; jax-cpu runs at 1.28x numpy-batch.\n" in md
    assert "<li>sklearn-mlp runs at 0.68x numpy-batch; jax-cpu runs at 1.28x numpy-batch.</li>" in page
    peers = md.split("## Peers")[1]
    assert re.search(r"sqrt\(1 - b2\^t\).*\n\nThe hw1-q3 accuracy cells", peers)   # a paragraph, not the list's tail


def test_the_pytest_benchmark_table_names_each_rows_network(pages):
    md, _ = pages
    table = [line for line in md.split("## pytest-benchmark")[1].splitlines() if line.startswith("| ")]
    assert table[0].startswith("| preset | network | implementation | dtype | batch |")
    assert [row.split(" | ")[:3] for row in table[1:]] == [
        ["| hw1-q3", "784-256-128-64-10 relu", "torch-minimal (reference)"],
        ["| hw1-q4", "784-32-32-10 sigmoid", "numpy-batch"],
        ["| hw1-q4", "784-32-32-10 sigmoid", "numpy-batch"],
        ["| not recorded", "not recorded", "torch-cpu"]]
