"""The HTML pages the project ships, opened in a real headless browser (Chromium from apt):
the session report, a history page and a compare page. Each screenshot must show content.
Set BPB_SCREENSHOTS=FOLDER to keep the screenshots and look at them."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers import ROOT, run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (apt-get install chromium)")


def screenshot(page: Path, out: Path) -> np.ndarray:
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=1400,1000", f"--screenshot={out}", page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert out.is_file(), proc.stderr[-2000:]
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


def test_the_session_report_renders(tmp_path, shots):
    from reports.render import write_report
    payload = json.loads((ROOT / "tests" / "fixtures" / "report_session.json").read_text())
    paths = write_report(pd.DataFrame(payload["cells"]), pd.DataFrame(payload["epochs"]), payload["examples"],
                         payload["meta"], tmp_path / "report")
    assert_shows_content(screenshot(paths["html"], shots / "report.png"))


def test_the_history_page_renders(tmp_path, shots):
    from tests.seed_history import seed_history
    seeded = seed_history(tmp_path / "seeded", n=12)
    proc = run_cli("history", "--repo", str(seeded["repo"]), "--tracking-uri", seeded["uri"],
                   "--output-dir", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert_shows_content(screenshot(tmp_path / "out" / "history" / "history.html", shots / "history.png"))


def test_the_compare_page_renders(tmp_path, shots):
    from reports.compare import compare_cells, render
    cell = "throughput/numpy-batch/hw1-q4/float32/b256/s0"
    frame = lambda tag: pd.DataFrame([{"run_id": tag, "cell": cell, "status": "FINISHED",  # noqa: E731
                                       "test_accuracy": float("nan"), "parity_max_error": 1e-7}])
    table = compare_cells(frame("a"), {"a": [1e5, 1.01e5, 0.99e5]}, frame("b"), {"b": [5e4, 5.1e4, 4.9e4]})
    _, page = render(table, [("git_commit", "aaa", "bbb")], None, "a" * 32, "b" * 32, 0.1)
    (tmp_path / "compare.html").write_text(page)
    assert_shows_content(screenshot(tmp_path / "compare.html", shots / "compare.png"))


def test_look_shows_the_runs_view_the_headline_and_the_training_curves_first(dry_run, shots):
    """`python -m benchmarks look` on a dry-run session: the MLflow UI (a real `mlflow ui`) opens
    on runs with metric columns, the session's description holds the headline, a cell's page
    starts with its training curves. Read from each page's rendered text, beside its screenshot."""
    uri, session, _ = dry_run
    assert session.returncode == 0, session.stderr[-2000:]
    proc = run_cli("look", "--tracking-uri", uri, "--output-dir", str(shots / "look"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    folder = next((shots / "look").glob("*/ui-runs.png")).parent
    from matplotlib.image import imread
    for name in ("report", "ui-runs", "ui-session", "ui-cell-charts"):
        assert_shows_content(imread(folder / f"{name}.png"), dark=0.002)    # the UI is mostly white space
    text = {name: (folder / f"{name}.txt").read_text() for name in ("report", "ui-runs", "ui-session", "ui-cell-charts")}
    assert text["ui-runs"].lstrip().startswith("Runs - ") and "Traces Sessions Judges" not in text["ui-runs"]
    assert "speedup_vs_reference" in text["ui-runs"] and "samples_per_second_median" in text["ui-runs"]
    assert "is fastest" in text["ui-session"] and " f32 b1 · throughput hw1-q4" in text["ui-session"]   # readable names
    charts = text["ui-cell-charts"]
    assert "epoch (6)" in charts and charts.index("epoch (6)") < charts.index("Model metrics (")
    assert text["report"].index("Which implementation is fastest") < text["report"].index("Cells")
