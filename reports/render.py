"""The report of one session: ``write_report`` writes report.md, a self-contained
report.html and one PNG per figure into one folder (inputs: see ``reports/__init__.py``)."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import pandas as pd

from reports.figures import accuracy_figure, examples_figure, loss_figure, throughput_figure
from reports.tables import summary_table, to_markdown

FIGURES = {
    "throughput": "Throughput: speed-up over numpy-sample and % of the machine's peak",
    "accuracy": "Test accuracy per epoch and against wall-clock training time",
    "loss": "Training and test loss",
    "examples": "Three test images and their predicted class probabilities",
}


def best_example_cell(examples: dict, cells: pd.DataFrame) -> str | None:
    preds = examples.get("predictions", {}) if examples else {}
    if not preds:
        return None
    acc = examples.get("accuracy", {})
    return max(preds, key=lambda c: (acc.get(c) or 0.0, c))


def build_figures(cells: pd.DataFrame, epochs: pd.DataFrame, examples: dict, meta: dict) -> dict:
    targets = (cells[cells["kind"] == "accuracy"].dropna(subset=["target_accuracy"])
               .groupby("preset")["target_accuracy"].first().to_dict())
    figs = {"throughput": throughput_figure(cells, float(meta.get("peak_gemm_gflops", float("nan")))),
            "accuracy": accuracy_figure(epochs, targets),
            "loss": loss_figure(epochs)}
    cell = best_example_cell(examples, cells)
    if cell:
        figs["examples"] = examples_figure(examples, cell)
    return figs


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def write_report(cells: pd.DataFrame, epochs: pd.DataFrame, examples: dict, meta: dict,
                 out_dir: str | Path) -> dict[str, Path]:
    """Writes report.md, report.html (self-contained) and one PNG per figure; returns paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = summary_table(cells)
    pngs = {name: _png(fig) for name, fig in build_figures(cells, epochs, examples, meta).items()}
    paths = {}
    for name, data in pngs.items():
        paths[name] = out / f"{name}.png"
        paths[name].write_bytes(data)
    machine = meta.get("machine", {})
    facts = [
        f"session run `{meta.get('run_id', '?')}`, dataset {meta.get('dataset', '?')}",
        *([f"INCOMPLETE: the session ended {meta['status']} ({meta.get('reason') or 'no reason recorded'}); "
           "only the cells it finished are shown"] if meta.get("status", "FINISHED") not in ("FINISHED", "RUNNING") else []),
        f"CPU {machine.get('cpu_model', '?')} ({machine.get('cpu_cores', '?')} cores), GPU {machine.get('gpu', '?')}",
        f"BLAS {machine.get('blas', '?')}; {machine.get('openblas_env', '')}",
        f"peak float32 GEMM {float(meta.get('peak_gemm_gflops', float('nan'))):.0f} GFLOP/s (measured at session start)",
        f"git commit {machine.get('git_commit', '?')}",
    ]
    md = ["# backprop-bench report", "", *[f"- {f}" for f in facts], "", "## Cells", "",
          to_markdown(table), ""]
    for name, title in FIGURES.items():
        if name in pngs:
            md += [f"## {title}", "", f"![{title}]({name}.png)", ""]
    paths["markdown"] = out / "report.md"
    paths["markdown"].write_text("\n".join(md))
    body = [f"<h1>backprop-bench report</h1><ul>{''.join(f'<li>{html.escape(f)}</li>' for f in facts)}</ul>",
            "<h2>Cells</h2>", table.to_html(index=False, escape=True, border=0, classes="cells")]
    for name, title in FIGURES.items():
        if name in pngs:
            b64 = base64.b64encode(pngs[name]).decode()
            body.append(f"<h2>{html.escape(title)}</h2><img alt=\"{html.escape(title)}\" src=\"data:image/png;base64,{b64}\">")
    style = ("body{font-family:sans-serif;margin:2em;max-width:1600px} table.cells{border-collapse:collapse;"
             "font-size:12px} .cells td,.cells th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
             " img{max-width:100%}")
    paths["html"] = out / "report.html"
    paths["html"].write_text(f"<!doctype html><html><head><meta charset=\"utf-8\"><title>backprop-bench report"
                             f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>")
    return paths
