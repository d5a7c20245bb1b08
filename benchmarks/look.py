"""``python -m benchmarks look``: what a newcomer sees, as screenshots. The session's report,
and the MLflow UI on the same store: the experiment page (it must open on the runs list), the
session's run (its description holds the headline) and one accuracy cell's charts (training
curves first). Headless Chromium renders each page (``benchmarks/browser.py``), and each is
shot once a check inside it says its first screen has drawn its data; a page that never does
makes ``look`` exit 1, naming it. Beside each PNG: the page's text (``.txt``) and what its check
read (``.json``: the runs table's rows), which ``tests/test_pages.py`` reads to check what the
screenshot shows.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import tracking
from benchmarks.browser import Browser, BrowserError
from benchmarks.config import UsageError
from tracking.server import ServerError, server_env, wait_ready


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
                             "--port", str(port), "--workers", "1"], env=server_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, wait)
    except ServerError as exc:
        stop_ui(proc)
        raise UsageError(f"{exc}: {tracking.display_uri(proc.stderr.read()[-500:])}") from None
    return proc


def stop_ui(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


# Each page's check, run inside the page until it says ready: nothing on the first screen still
# loading (MLflow's spinners, skeletons and placeholders, the table's loading overlay), and the
# page's data on that screen. ``data`` is what it read there, saved beside the screenshot as JSON.
_SCREEN = """
const seen = el => { const r = el.getBoundingClientRect();
  return r.width > 0 && r.height > 0 && r.bottom > 0 && r.right > 0 && r.top < innerHeight && r.left < innerWidth; };
const text = document.body ? document.body.innerText : "";
// a document still being parsed counts as loading: its first part can hold the marker while
// the placeholder after it has not been parsed yet (seen on a busy machine)
const loading = (document.readyState === "complete" ? 0 : 1) + [...document.querySelectorAll('[class*="spin-spinning"], [class*="skeleton" i], [role="progressbar"], '
  + '.ag-overlay-loading-wrapper')].filter(seen).length
  + [...document.querySelectorAll("span")].filter(e => e.childElementCount === 0 && /loading(\\.\\.\\.)?$/i
      .test(e.textContent.trim()) && seen(e.parentElement)).length;     // a placeholder: "Child runs loading"
"""
_MARKER = """const ready = loading === 0 && text.includes(MARKER);
return {ready, why: loading ? loading + " parts still loading" : "no '" + MARKER + "' on the page", data: {loading}};"""
CHECKS = {
    # the runs table: the rows on the first screen, each as {column id: the text shown}
    "ui-runs": """
const rows = {};
for (const cell of document.querySelectorAll(".ag-row [col-id]")) {
  if (!seen(cell)) continue;
  const i = cell.closest(".ag-row").getAttribute("row-index");
  (rows[i] = rows[i] || {})[cell.getAttribute("col-id")] = cell.innerText.trim();
}
const shown = Object.keys(rows).sort((a, b) => a - b).map(i => rows[i]);
const name = row => row["attributes.`Run Name`"] || "";
const cells = shown.filter(row => !name(row).includes("Group: "));
const valued = cells.filter(row => Object.entries(row).some(([k, v]) => k.startsWith("metrics.") && /^-?[0-9]/.test(v)));
const ready = loading === 0 && valued.length > 0;
return {ready, why: loading ? loading + " parts still loading" : cells.length ? "no cell's row shows a metric value"
          : "no cell's row on the first screen", data: {rows: shown, cells_with_values: valued.length,
          matching: (text.match(/([0-9]+) matching runs/) || [])[1] || null}};""",
    # a cell's charts: the plots on the first screen, drawn (a trace in each)
    "ui-cell-charts": """
const plots = [...document.querySelectorAll(".js-plotly-plot")].filter(seen);
const drawn = plots.filter(p => p.querySelector(".trace")).length;
const ready = loading === 0 && drawn > 0 && drawn === plots.length;
return {ready, why: loading ? loading + " charts or parts still loading" : plots.length ? (plots.length - drawn)
          + " of " + plots.length + " charts without data" : "no chart on the first screen",
        data: {charts: plots.length, drawn, loading}};""",
    "ui-session": _MARKER.replace("MARKER", '"Child runs"'),        # the session's page lists its cells
    "report": _MARKER.replace("MARKER", '"Which implementation is fastest"'),
}


def check(name: str) -> str:
    """The JavaScript expression that judges page ``name`` (see ``CHECKS``)."""
    return f"(() => {{{_SCREEN}{CHECKS[name]}}})()"


def shoot(browser, url: str, png: Path, name: str, wait: float = 60.0):
    """Screenshot ``url`` into ``png`` once page ``name`` has drawn its data on the first screen
    (at most ``wait`` seconds a load, two loads); the page's title and text go beside it
    (``.txt``), with what the check read (``.json``). Returns ``benchmarks.browser.Page``."""
    page = browser.open(url, check(name), png, wait=wait)
    png.with_suffix(".txt").write_text(page.text)
    png.with_suffix(".json").write_text(json.dumps({"ready": page.ready, "why": page.why, **page.data}, indent=1))
    return page


def run_ui(store: tracking.Store, host: str, port: int, session: str) -> int:
    """``mlflow ui`` on the store (in the foreground, until Ctrl-C), after pointing the saved view
    at ``session`` (``latest``, resolved by the caller) and printing its address."""
    view = tracking.Session(store, session).publish_view()
    print(f"MLflow UI for {store.display}, session {session}: http://{host}:{port}/{view}", flush=True)
    os.execve(sys.executable, [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store.uri, "--host", host,
                               "--port", str(port)], server_env())
    return 0                # not reached: exec replaces this process


def run_look(store: tracking.Store, session: str, out_dir: str, log=print) -> int:
    """Screenshots of ``session`` (a run id: ``tracking.resolve_ref`` resolves ``latest``) into
    ``out_dir``; exit status 1 when a page did not show its data."""
    from benchmarks.session import render_report
    chromium()
    cells = tracking.cell_runs(store, session)
    accuracy = [run for run, kind in cells if kind == "accuracy"] or [run for run, _ in cells]
    out = Path(out_dir) / session
    out.mkdir(parents=True, exist_ok=True)
    report = render_report(store, session, str(Path(out_dir) / "report"), log=lambda *_: None)["html"]
    port = free_port()
    log(f"mlflow ui on 127.0.0.1:{port} for {store.display}; screenshots into {out}")
    ui = start_ui(store.uri, port)
    base = f"http://127.0.0.1:{port}/#/experiments/{store.experiment_id}"
    view = tracking.Session(store, session).publish_view()      # the runs page shows this session
    pages = {"report": report.resolve().as_uri(), "ui-runs": f"http://127.0.0.1:{port}/{view}",
             "ui-session": f"{base}/runs/{session}?workflowType=machine_learning"}
    if accuracy:
        pages["ui-cell-charts"] = f"{base}/runs/{accuracy[0]}/model-metrics?workflowType=machine_learning"
    shots, empty = {}, []
    try:
        with Browser(chromium()) as browser:
            for name, url in pages.items():
                shots[name] = out / f"{name}.png"
                page = shoot(browser, url, shots[name], name)
                log(f"  {name}: {shots[name]}" + ("" if page.ready else f" (shows no data: {page.why})"))
                if not page.ready:
                    empty.append(f"{name} ({page.why}, after {page.seconds:.0f} s)")
    except BrowserError as exc:
        empty.append(f"headless Chromium: {exc}")
    finally:
        stop_ui(ui)
    if empty:
        print(f"error: {len(empty)} of {len(pages)} pages did not show their data: {'; '.join(empty)}; the "
              f"screenshots are in {out}", file=sys.stderr)
        return 1
    return 0
