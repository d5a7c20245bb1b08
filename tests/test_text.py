"""Text from the store is data (reports/text.py): in the terminal, in markdown and in figures,
whatever a store value holds. The CLI test writes hostile values into a seeded store
(tests/seed_history.py) and runs every command that shows them."""
import pytest

from reports.page import png
from reports.tables import to_markdown, to_text
from reports.text import markdown_page, markdown_text, one_line, printable

# math that matplotlib cannot parse, a terminal title change, HTML, a table cell's end, a newline
HOSTILE = "ev$\\frac{$il\x1b]0;pwned\x07<img src=x onerror=alert(1)>\n| x |\r\x9b2J"


def test_printable_shows_control_characters_and_keeps_tabs_newlines_and_unicode():
    assert printable("a\x1b[31mb\x07c\x9b") == "a\\x1b[31mb\\x07c\\x9b"
    assert printable("tab\tnew\nline · ≥ 5% ü") == "tab\tnew\nline · ≥ 5% ü"


def test_markdown_text_is_one_line_without_html_or_table_syntax():
    text = markdown_text(HOSTILE)
    assert "\n" not in text and "\r" not in text and "\x1b" not in text
    assert "<img" not in text and "&lt;img" in text
    assert "\\| x \\|" in text


def test_a_terminal_table_row_is_one_line_whatever_a_cell_holds():
    import pandas as pd
    assert one_line("a\tb\nc\r\x1b") == "a\\tb\\nc\\r\\x1b"
    lines = to_text(pd.DataFrame({"machine": [HOSTILE, "laptop"], "samples/s": [1.0, 2.0]})).splitlines()
    assert len(lines) == 4                              # header, rule, two rows
    assert lines[2].startswith("ev$") and "\\n| x |" in lines[2] and lines[3].startswith("laptop")


def test_a_table_cell_cannot_end_its_row_and_free_lines_cannot_start_html():
    import pandas as pd
    md = markdown_page(["# title", f"- machine: {HOSTILE}", "", to_markdown(pd.DataFrame({"cell": [HOSTILE]}))])
    lines = md.splitlines()
    assert len(lines) == 6                              # title, the item, blank, header, rule, one row
    assert lines[1].startswith("- machine: ev$") and "<img" not in md
    assert lines[-1].startswith("| ev$") and lines[-1].endswith(" |")


def test_a_figure_draws_dollars_and_control_characters_as_written():
    from matplotlib.figure import Figure
    fig = Figure()
    ax = fig.add_subplot()
    ax.bar([HOSTILE, "numpy-batch"], [1.0, 2.0], label=HOSTILE)       # a category tick label too
    ax.set_title(HOSTILE)
    ax.legend()
    assert png(fig).startswith(b"\x89PNG")
    assert "\x1b" not in fig.axes[0].get_title() and "$" in fig.axes[0].get_title()


@pytest.mark.integration
def test_hostile_store_values_reach_no_terminal_markdown_or_figure_as_code(tmp_path):
    """Before: matplotlib read the `$...$` as math and `history`, `report --latest-per-machine`
    and the session's report exited 1 with a traceback; the markdown copied the HTML and the
    newline; compare printed the escape sequences to the terminal."""
    import mlflow
    import tracking
    from tests.helpers import run_cli
    from tests.seed_history import seed_history
    seeded = seed_history(tmp_path / "seed", n=3)
    uri = seeded["uri"]
    client = mlflow.MlflowClient(uri)
    store = tracking.connect(uri)
    sessions = tracking.list_sessions(store)["run_id"].tolist()
    newest, older = sessions[0], sessions[1]
    client.set_tag(newest, "bpb.machine", HOSTILE)
    for run_id, _ in tracking.cell_runs(store, newest):
        client.set_tag(run_id, "implementation", HOSTILE)
        client.set_tag(run_id, "bpb.budget", HOSTILE)
    out = tmp_path / "out"
    for args in (["history", "--repo", str(seeded["repo"])], ["report", "--latest-per-machine"],
                 ["report", "--run-id", newest], ["compare", older, newest]):
        proc = run_cli(*args, "--tracking-uri", uri, "--output-dir", str(out))
        said = proc.stdout + proc.stderr
        assert proc.returncode == 0, (args, said[-3000:])
        assert "Traceback" not in said and "Warning" not in said, (args, said[-3000:])
        assert "\x1b" not in said and "\x07" not in said and "\x9b" not in said, args
        if args[0] == "compare" or "--latest-per-machine" in args:   # these print the machine label
            assert "\\x1b]0;pwned" in said, args                          # shown, not obeyed
        assert not any(line.startswith("| x |") for line in said.splitlines()), args    # no forged line
    pages = list(out.rglob("*.md"))
    assert len(pages) == 4
    for page in pages:
        text = page.read_text()
        assert "<img" not in text and "\x1b" not in text, page
        assert not any(line.startswith("| x |") for line in text.splitlines()), page
