"""Self-contained HTML report pages (the compiler's mapping report, the runtime's run report):
one style, matplotlib figures inlined as SVG, escaped tables. Deterministic: the same report
gives the same bytes."""

import html
import io

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

STYLE = ("body{font-family:sans-serif;margin:2em;max-width:75em}svg{max-width:100%;height:auto}"
         "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
         "dt{font-weight:bold;float:left;clear:left;width:13em}dd{margin-left:14em}.note{color:#666;font-style:italic}")


def fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)


def svg(fig: Figure, name: str) -> str:
    """The figure as inline SVG; the salt is per figure so element ids stay unique within the page."""
    FigureCanvasAgg(fig)
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": f"sdllm-{name}"}):
        fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg"):]


def table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(v))}</td>" for v in row) + "</tr>\n" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody></table>\n"


def page(title: str, summary: list, body: list[str], style: str = "") -> str:
    """A page: the title, a definition list of (name, value) pairs (None values left out), then body."""
    esc = html.escape
    out = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
           f"<style>{STYLE}{style}</style></head><body>\n<h1>{esc(title)}</h1>\n<dl>\n"]
    out += [f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>\n" for k, v in summary if v is not None]
    out.append("</dl>\n")
    out += body
    out.append("</body></html>\n")
    return "".join(out)


def frame(page_html: str, height: int = 720) -> str:
    """A page as a notebook cell shows it: in an iframe (`srcdoc`), so that the page's style stays
    inside it instead of restyling the notebook."""
    return (f'<iframe srcdoc="{html.escape(page_html, quote=True)}" style="width:100%;height:{height}px;border:0">'
            "</iframe>")
