"""``python -m benchmarks look``: what a newcomer sees, as screenshots. The session's report,
and the MLflow UI on the same store: the experiment page (it must open on the runs list), the
session's run (its description holds the headline) and one accuracy cell's charts (training
curves first). Headless Chromium renders each page; beside each PNG, the rendered page's text
(``.txt``), which ``tests/test_pages.py`` reads to check what the screenshot shows.
"""
from __future__ import annotations

import html
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import tracking
from benchmarks.config import UsageError
from benchmarks.server import wait_ready

WINDOW = "1600,1300"


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise UsageError("no Chromium here: install it (apt-get install chromium) to take screenshots")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ui(uri: str, port: int, wait: float = 90.0) -> subprocess.Popen:
    """``mlflow ui`` on ``uri`` at 127.0.0.1:``port``, answering /health; UsageError if it does not."""
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, wait)
    except UsageError as exc:
        stop_ui(proc)
        raise UsageError(f"{exc}: {tracking.display_uri(proc.stderr.read()[-500:])}") from None
    return proc


def stop_ui(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


# what each page shows once it has loaded its data (a busy machine makes the UI slow to fill in)
LOADED = {"report": "Which implementation is fastest", "ui-runs": "Run Name", "ui-session": "Child runs",
          "ui-cell-charts": "Model metrics ("}


def shoot(url: str, png: Path, loaded: str = "", tries: int = 3) -> str:
    """Screenshot ``url`` into ``png``; returns the rendered page's visible text (also saved
    beside it). Retried, with more time each try, until the text contains ``loaded``."""
    for attempt in range(1, tries + 1):
        base = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                f"--window-size={WINDOW}", f"--virtual-time-budget={15000 * attempt}"]
        dom = subprocess.run([*base, "--dump-dom", f"--screenshot={png}", url], capture_output=True, text=True,
                             timeout=300).stdout           # one load: the text is the screenshot's
        text = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
        text = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text)))
        if loaded in text or attempt == tries:
            png.with_suffix(".txt").write_text(text)
            return text
    return ""


def run_ui(uri: str, host: str, port: int, session: str) -> int:
    """``mlflow ui`` on ``uri`` (in the foreground, until Ctrl-C), after pointing the saved view
    at ``session`` (``latest``, resolved by the caller) and printing its address."""
    experiment = tracking.connect(uri, create=False)
    view = tracking.Session(uri, session, experiment).publish_view()
    print(f"MLflow UI for {tracking.display_uri(uri)}, session {session}: http://{host}:{port}/{view}", flush=True)
    os.execv(sys.executable, [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host,
                              "--port", str(port)])
    return 0                # not reached: exec replaces this process


def run_look(uri: str, session: str, out_dir: str, log=print) -> dict[str, Path]:
    """Screenshots of ``session`` (a run id: ``tracking.resolve_ref`` resolves ``latest``) into ``out_dir``."""
    from benchmarks.session import render_report
    chromium()
    experiment = tracking.connect(uri, create=False)
    cells = tracking.cell_runs(uri, session)
    accuracy = [run for run, kind in cells if kind == "accuracy"] or [run for run, _ in cells]
    out = Path(out_dir) / session
    out.mkdir(parents=True, exist_ok=True)
    report = render_report(uri, session, str(Path(out_dir) / "report"), log=lambda *_: None)["html"]
    port = free_port()
    log(f"mlflow ui on 127.0.0.1:{port} for {tracking.display_uri(uri)}; screenshots into {out}")
    ui = start_ui(uri, port)
    base = f"http://127.0.0.1:{port}/#/experiments/{experiment}"
    view = tracking.Session(uri, session, experiment).publish_view()      # the runs page shows this session
    pages = {"report": report.resolve().as_uri(), "ui-runs": f"http://127.0.0.1:{port}/{view}",
             "ui-session": f"{base}/runs/{session}?workflowType=machine_learning"}
    if accuracy:
        pages["ui-cell-charts"] = f"{base}/runs/{accuracy[0]}/model-metrics?workflowType=machine_learning"
    shots = {}
    try:
        for name, url in pages.items():
            shots[name] = out / f"{name}.png"
            shoot(url, shots[name], LOADED[name])
            log(f"  {name}: {shots[name]}")
    finally:
        stop_ui(ui)
    return shots
