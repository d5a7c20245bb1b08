"""The HTML pages the project ships, opened in a real headless browser (Chromium from apt):
the session report, a history page and a compare page, each screenshot showing content; and
`look` on a real `mlflow ui`: the saved view's first screen shows the session's cells with
their values, a cell's page its drawn charts, and a page that shows no data is never taken
for one that does. Set BPB_SCREENSHOTS=FOLDER to keep the screenshots and look at them."""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import impls
from tests.helpers import ROOT, run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.integration, pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (apt-get install chromium)")]


# a page loaded, with everything it loads (its images are inline)
LOADED = "({ready: document.readyState === 'complete', why: 'still loading: ' + document.readyState, data: {}})"


def screenshot(browser, page: Path, out: Path) -> np.ndarray:
    """The page in the run's one headless Chromium (tests/conftest.py), as a screenshot's pixels."""
    opened = browser.open(page.resolve().as_uri(), LOADED, out, wait=60, tries=1, poll=0.1)
    assert opened.ready and out.is_file(), opened.why
    from matplotlib.image import imread
    return imread(out)


@pytest.fixture
def shots(tmp_path):
    folder = Path(os.environ.get("BPB_SCREENSHOTS") or tmp_path / "shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def assert_shows_content(pixels: np.ndarray, dark: float = 0.005):
    gray = pixels[..., :3].mean(axis=2)
    assert gray.std() > 0.05                            # not a blank page
    assert (gray < 0.5).mean() > dark                   # text and lines drawn on it


def test_the_session_report_renders(tmp_path, shots, browser):
    from reports.render import write_report
    payload = json.loads((ROOT / "tests" / "fixtures" / "report_session.json").read_text())
    paths = write_report(pd.DataFrame(payload["cells"]), pd.DataFrame(payload["epochs"]), payload["examples"],
                         payload["meta"], tmp_path / "report", speedup_base=impls.SPEEDUP_BASE, peers=impls.PEERS)
    assert_shows_content(screenshot(browser, paths["html"], shots / "report.png"))


def test_the_history_page_renders(tmp_path, shots, browser):
    from tests.seed_history import seed_history
    seeded = seed_history(tmp_path / "seeded", n=12)
    proc = run_cli("history", "--repo", str(seeded["repo"]), "--tracking-uri", seeded["uri"],
                   "--output-dir", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert_shows_content(screenshot(browser, tmp_path / "out" / "history" / "history.html", shots / "history.png"))


def test_the_compare_page_renders(tmp_path, shots, browser):
    from reports.compare import compare_cells, render
    cell = "throughput/numpy-batch/hw1-q4/float32/b256/s0"
    frame = lambda tag: pd.DataFrame([{"run_id": tag, "cell": cell, "status": "FINISHED",  # noqa: E731
                                       "test_accuracy": float("nan"), "parity_max_error": 1e-7}])
    table = compare_cells(frame("a"), {"a": [1e5, 1.01e5, 0.99e5]}, frame("b"), {"b": [5e4, 5.1e4, 4.9e4]})
    _, page = render(table, [("git_commit", "aaa", "bbb")], None, "a" * 32, "b" * 32, 0.1)
    (tmp_path / "compare.html").write_text(page)
    assert_shows_content(screenshot(browser, tmp_path / "compare.html", shots / "compare.png"))


def test_look_shows_the_cells_with_their_values_the_headline_and_drawn_training_curves(dry_run, shots):
    """`python -m benchmarks look` on a dry-run session, with a real `mlflow ui`: the address the
    session prints opens on its cells as rows, each with its numbers, grouped by configuration,
    the fastest first; the session's description holds the headline; a cell's page starts with
    its training curves, drawn. Read from what each page's check read (``.json``) and its text."""
    import mlflow
    uri, session, _ = dry_run
    assert session.returncode == 0, session.stderr[-2000:]
    proc = run_cli("look", "--tracking-uri", uri, "--output-dir", str(shots / "look"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("backprop-bench").experiment_id
    [parent] = client.search_runs([experiment], filter_string="tags.`bpb.kind` = 'session'")
    folder = shots / "look" / parent.info.run_id
    from matplotlib.image import imread
    names = ("report", "ui-runs", "ui-session", "ui-cell-charts")
    for name in names:
        assert_shows_content(imread(folder / f"{name}.png"), dark=0.002)    # the UI is mostly white space
    text = {name: " ".join((folder / f"{name}.txt").read_text().split()) for name in names}
    read = {name: json.loads((folder / f"{name}.json").read_text()) for name in names}
    assert all(read[name]["ready"] for name in names), read
    assert text["ui-runs"].lstrip().startswith("Runs - ") and "Traces Sessions Judges" not in text["ui-runs"]

    # the first screen: the session's cells as rows with their own numbers, not "-", as many as
    # a 1300-pixel window holds (the grid draws no row below it)
    cells = client.search_runs([experiment], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(cells) >= 10
    rows = {row["attributes.`Run Name`"]: row for row in read["ui-runs"]["rows"]}
    speed, accuracy = "metrics.`samples_per_second_median`", "metrics.`test_accuracy`"
    shown = [run for run in cells if run.info.run_name in rows]
    assert len(shown) >= min(len(cells), 20), sorted(rows)
    for run in shown:
        row = rows[run.info.run_name]
        assert float(row[speed]) == pytest.approx(run.data.metrics["samples_per_second_median"], rel=1e-6), row
        if run.data.tags["bpb.cell_kind"] == "accuracy":
            assert float(row[accuracy]) == pytest.approx(run.data.metrics["test_accuracy"], rel=1e-6), row
    assert read["ui-runs"]["matching"] == str(len(cells))            # no parent row, no other session
    # grouped by configuration, the fastest first in each group
    groups, group = {}, None
    for row in read["ui-runs"]["rows"]:
        name = row["attributes.`Run Name`"]
        if "Group: " in name:
            group = groups.setdefault(name.split("Group: ")[1].splitlines()[0], [])
        else:
            group.append((name, float(row[speed])))
    assert "f32 b256 · hw1-q3 seed 0" in groups and sum(map(len, groups.values())) == len(shown)
    for configuration, members in groups.items():
        assert all(name.endswith(configuration) for name, _ in members), members
        assert [v for _, v in members] == sorted((v for _, v in members), reverse=True), members

    assert "is fastest" in text["ui-session"] and " f32 b1 · throughput hw1-q4" in text["ui-session"]   # readable names
    charts = text["ui-cell-charts"]
    assert "epoch (6)" in charts and charts.index("epoch (6)") < charts.index("Model metrics (")
    drawn = read["ui-cell-charts"]
    assert drawn["charts"] >= 3 and drawn["drawn"] == drawn["charts"] and drawn["loading"] == 0
    assert text["report"].index("Which implementation is fastest") < text["report"].index("Cells")


# Pages shaped as MLflow's are (its spinner's class, the runs table's rows, a chart's trace): what
# each of look's checks must tell apart, in the same real browser.
SPINNER = '<div class="du-bois-light-spin du-bois-light-spin-spinning">loading</div>'
CHART = '<div class="js-plotly-plot" style="height:200px"><svg><g class="trace scatter"></g></svg></div>'
ROW = ('<div class="ag-row" row-index="{i}"><div col-id="attributes.`Run Name`">{name}</div>'
       '<div col-id="metrics.`samples_per_second_median`">{value}</div></div>')


def test_look_waits_for_the_charts_and_refuses_a_page_without_data(tmp_path, shots, browser):
    from benchmarks.look import check
    pages = {
        # spinners first; a second later, the charts: look waits for them
        "late-charts": f"""<body>{SPINNER * 3}<div id="c"></div><script>setTimeout(() => {{
            document.body.innerHTML = '{CHART * 3}'; }}, 1000)</script></body>""",
        "spinning": f"<body>{CHART}{SPINNER}</body>",                    # one chart drawn, one still loading
        "empty-chart": '<body><div class="js-plotly-plot" style="height:200px"><svg></svg></div></body>',
        "rows-with-values": "<body>" + ROW.format(i=0, name="numpy-batch f32 b1", value="1234.5") + "</body>",
        "rows-of-dashes": "<body>" + "".join(ROW.format(i=i, name=f"cell {i}", value="-") for i in range(3)) + "</body>",
        "no-rows": "<body>No runs match the search</body>",
        # the run page's placeholder, a grey bar with a hidden label, until the child runs come
        "session-placeholder": '<body>Child runs <div style="width:200px;height:8px"><span>Child runs loading</span>'
                               '</div></body>',
        "session-listed": "<body>Child runs <a href='#'>numpy-batch f32 b1 · throughput hw1-q4</a></body>",
    }
    for name, body in pages.items():
        (tmp_path / f"{name}.html").write_text(body)
    drawn = {"late-charts", "rows-with-values", "session-listed"}      # the rest never is: waited for briefly
    opened = {}
    for name in pages:
        kind = "ui-runs" if "rows" in name else "ui-session" if "session" in name else "ui-cell-charts"
        opened[name] = browser.open((tmp_path / f"{name}.html").as_uri(), check(kind), shots / f"{name}.png",
                                    wait=60 if name in drawn else 2, tries=1, poll=0.2)
    assert opened["late-charts"].ready and opened["late-charts"].data["drawn"] == 3
    assert not opened["spinning"].ready and "still loading" in opened["spinning"].why
    assert not opened["empty-chart"].ready and "1 of 1 charts without data" in opened["empty-chart"].why
    assert opened["rows-with-values"].ready and opened["rows-with-values"].data["cells_with_values"] == 1
    assert not opened["rows-of-dashes"].ready and "no cell's row shows a metric value" in opened["rows-of-dashes"].why
    assert not opened["no-rows"].ready and "no cell's row on the first screen" in opened["no-rows"].why
    assert not opened["session-placeholder"].ready and "still loading" in opened["session-placeholder"].why
    assert opened["session-listed"].ready
