"""``OUT/report.md`` and ``OUT/report.html`` from the run markers and metric ledgers in ``OUT``.

One summary row per notebook (status, duration, key metrics with the paper's number beside ours,
the executed notebook's path), then one table per notebook with every recorded metric. The report
is built from the files in ``OUT`` (not from memory), so a resumed or partial run reports every
notebook that has a marker there. Damaged files never stop the report: a marker that does not parse
or is not an object (``[1, 2]``) and a truncated ledger give the status ``damaged`` with one line
saying which file and why (:mod:`.integrity`); only a notebook with an ``ok`` marker counts as
completed, and only its ledger feeds the claims table (a ledger without one is incomplete).
"""
from __future__ import annotations

import datetime as _dt
import html
import platform
from pathlib import Path
from typing import Any, Dict, List, Optional

import nbformat
import torch
from nbconvert import HTMLExporter

from ..core.version import __version__
from ..core.ledger import atomic_write_text
from .catalog import catalog
from .claims import ClaimResult, score_claims
from .integrity import file_digest, marker_problem, read_marker, read_metrics

__all__ = ["write_report", "collect"]


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _metric_text(m: Dict[str, Any]) -> str:
    s = _fmt(m["value"]) + (f" {m['unit']}" if m.get("unit") else "")
    if m.get("paper") is not None:
        s += f" (paper {_fmt(m['paper'])})"
    return s


def _infos(notebooks_dir) -> List[Any]:
    try:
        return catalog(notebooks_dir)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _clean_marker(m: Dict[str, Any], fname: str):
    """(marker with fields of the right types, problem or None): a wrong-typed field is dropped."""
    kinds = {"name": str, "status": str, "duration": (int, float), "output": str, "error": dict, "digests": dict}
    wrong = [k for k, t in kinds.items()
             if m.get(k) is not None and (not isinstance(m[k], t) or isinstance(m[k], bool))]
    if not wrong:
        return m, None
    return ({k: v for k, v in m.items() if k not in wrong},
            f"{fname} has field(s) of the wrong type: {', '.join(wrong)} (edited or damaged?)")


def _digest_problem(out_dir: Path, m: Dict[str, Any]) -> Optional[str]:
    """For an ok marker: the notebook or ledger whose sha256 is not the one the run recorded."""
    d = m.get("digests")
    if m.get("status") != "ok" or not isinstance(d, dict):
        return None
    if "digest" in m and marker_problem(m, str(m.get("name"))):
        return marker_problem(m, str(m.get("name")))
    for key, fname in (("output", m.get("output")), ("ledger", m.get("ledger"))):
        if isinstance(fname, str) and "/" not in fname and key in d and d[key] != file_digest(out_dir / fname):
            return f"{fname} differs from the file the run wrote (sha256 mismatch: damaged or edited)"
    return None


def collect(out_dir, notebooks_dir=None) -> List[Dict[str, Any]]:
    """One dict per notebook with a marker in ``out_dir``: marker, metrics, notebook info, and
    ``problem`` (None, or the line saying which file is damaged and how)."""
    out_dir = Path(out_dir)
    infos = {i.name: i for i in _infos(notebooks_dir)}
    rows = []
    for marker in sorted(out_dir.glob("*.run.json")):
        stem = marker.name[: -len(".run.json")]
        m = read_marker(out_dir, stem)
        problem = None
        if m is None:
            problem = f"{marker.name} is damaged (not a JSON object; truncated or overwritten?)"
            m = {"name": stem, "status": "damaged"}
        m, bad = _clean_marker(m, marker.name)
        name = m.get("name") if isinstance(m.get("name"), str) else stem
        metrics, bad_ledger = read_metrics(out_dir / f"{name}.metrics.json")
        bad = bad or bad_ledger or _digest_problem(out_dir, m)
        if bad:
            problem = problem or bad
            m = dict(m, status="damaged")
        info = infos.get(name)
        keys = info.key_metrics if info else []
        key_metrics = [x for x in metrics if x["name"] in keys] or metrics[:3]
        rows.append({"name": name, "marker": m, "metrics": metrics, "key_metrics": key_metrics, "problem": problem,
                     "title": info.title if info else name, "paper": info.paper if info else "",
                     "html": f"{name}.html" if (out_dir / f"{name}.html").exists() else None})
    return rows


def _environment() -> str:
    try:
        tv = f"torch {torch.__version__}, " + ("CUDA " + torch.cuda.get_device_name(0)
                                               if torch.cuda.is_available() else "CPU only")
    except Exception:  # pragma: no cover
        tv = "torch unavailable"
    return (f"xnn {__version__}; {tv}; Python {platform.python_version()} on {platform.machine()}; "
            f"written {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M UTC}")


def claim_results(out_dir, notebooks_dir=None) -> List[ClaimResult]:
    """Every claim of every notebook in the catalog, decided from the ledgers in ``out_dir`` (a notebook
    that has not run gives "not run" for each of its claims)."""
    out_dir = Path(out_dir)
    out: List[ClaimResult] = []
    for info in _infos(notebooks_dir):
        m = read_marker(out_dir, info.name) if info.claims else None
        ok = bool(m) and m.get("status") == "ok"   # a ledger without an ok marker is incomplete
        metrics = read_metrics(out_dir / f"{info.name}.metrics.json")[0] if ok else []
        out += score_claims(info.name, info.claims, metrics)
    return out


def _anchor(section: str) -> str:
    """Jupyter's heading anchor (spaces become '-')."""
    return "#" + section.strip().replace(" ", "-") if section else ""


def _claims_md(results: List[ClaimResult]) -> List[str]:
    if not results:
        return ["No notebook declares claims."]
    counts = {v: sum(r.verdict == v for r in results) for v in ("reproduced", "mixed", "not reproduced", "not run")}
    md = ["## Claims", "", ", ".join(f"{n} {v}" for v, n in counts.items()) + f" (of {len(results)}). A claim is "
          "*reproduced* when every seed has the paper's sign and the mean is beyond its sd.", "",
          "| claim | notebook | verdict | ours: mean ± sd (seeds) | paper | metric |", "|---|---|---|---|---|---|"]
    for r in results:
        c = r.claim
        paper = "–" if c.paper is None else f"{c.paper:+.4g}"
        where = f"[{r.notebook}]({r.notebook}.ipynb{_anchor(c.section)})"
        md.append(f"| {c.text} ({c.id}) | {where} | **{r.verdict}** | {r.effect} | {paper} "
                  f"(sign {c.direction}) | `{c.metric}` |")
    return md


def notebook_html(ipynb) -> Path:
    """Write ``NN_name.html`` beside an executed notebook: a static page with its text, code and figures
    (images embedded), readable without a kernel; return its path."""
    ipynb = Path(ipynb)
    nb = nbformat.read(str(ipynb), as_version=4)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    target = ipynb.with_suffix(".html")
    atomic_write_text(target, body)
    return target


def write_report(out_dir, *, profile: Optional[str] = None, notebooks_dir=None) -> Dict[str, Path]:
    """Write ``report.md`` and ``report.html`` into ``out_dir``; return their paths. Both open with the
    claims table (:func:`claim_results`), then one row per notebook, then every metric."""
    out_dir = Path(out_dir)
    rows = collect(out_dir, notebooks_dir)
    claims = claim_results(out_dir, notebooks_dir)
    n_ok = sum(r["marker"].get("status") == "ok" for r in rows)
    title = "xnn reproduction report" + (f" — profile `{profile}`" if profile else "")
    md = [f"# {title}", "", f"{n_ok}/{len(rows)} notebooks completed. {_environment()}.", "",
          "Numbers are ours unless marked *paper*; these are reproductions not verified by the "
          "original authors (each notebook lists its deviations).", ""] + _claims_md(claims) + [
          "", "## Notebooks", "",
          "| notebook | status | duration | key metrics (ours, paper) | executed notebook |",
          "|---|---|---|---|---|"]
    for r in rows:
        m = r["marker"]
        status = m.get("status", "?")
        if status != "ok" and m.get("error"):
            e = m["error"]
            status += f": cell {e.get('cell')}: {e.get('ename')}"
        km = "; ".join(f"{x['name']} = {_metric_text(x)}" for x in r["key_metrics"]) or "–"
        static = f" ([static HTML]({r['html']}))" if r.get("html") else ""
        md.append(f"| {r['name']} | {status} | {m.get('duration', 0):.1f} s | {km} | {m.get('output', '')}{static} |")
    for r in rows:
        md += ["", f"## {r['name']}: {r['title']}", ""]
        if r["paper"]:
            md += [f"*{r['paper']}*", ""]
        if r["problem"]:
            md += [f"**Damaged**: {r['problem']}; rerun it (`xnn reproduce --resume` runs it again)", ""]
        err = r["marker"].get("error")
        if err:
            md += [f"**Failed** at cell {err.get('cell')}: `{err.get('ename')}: {err.get('evalue')}`", ""]
        if r["metrics"]:
            md += ["| metric | ours | paper | note |", "|---|---|---|---|"]
            for x in r["metrics"]:
                val = _fmt(x["value"]) + (f" {x['unit']}" if x.get("unit") else "")
                note = (x.get("note") or "").replace("|", "\\|")
                md.append(f"| {x['name']} | {val} | {_fmt(x.get('paper'))} | {note} |")
        else:
            md.append("No metrics recorded.")
    md_text = "\n".join(md) + "\n"
    paths = {"md": out_dir / "report.md", "html": out_dir / "report.html"}
    atomic_write_text(paths["md"], md_text)
    atomic_write_text(paths["html"], _html(title, rows, n_ok, claims))
    return paths


def _claims_html(results: List[ClaimResult]) -> List[str]:
    e = html.escape
    if not results:
        return ["<p>No notebook declares claims.</p>"]
    out = ["<h2 id='claims'>Claims</h2>", "<p>A claim is <i>reproduced</i> when every seed has the paper's sign and "
           "the mean is beyond its sd.</p>", "<table><tr><th>claim</th><th>notebook</th><th>verdict</th>"
           "<th>ours: mean ± sd (seeds)</th><th>paper</th><th>metric</th></tr>"]
    for r in results:
        c = r.claim
        paper = "–" if c.paper is None else f"{c.paper:+.4g}"
        cls = r.verdict.replace(" ", "-")
        out.append(f"<tr><td>{e(c.text)} ({e(c.id)})</td><td><a href='{e(r.notebook)}.ipynb{e(_anchor(c.section))}'>"
                   f"{e(r.notebook)}</a></td><td class='{cls}'><b>{e(r.verdict)}</b></td><td>{e(r.effect)}</td>"
                   f"<td>{e(paper)} (sign {e(c.direction)})</td><td><code>{e(c.metric)}</code></td></tr>")
    out.append("</table>")
    return out


def _html(title: str, rows: List[Dict[str, Any]], n_ok: int, claims: Optional[List[ClaimResult]] = None) -> str:
    e = html.escape
    out = ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{e(title)}</title>",
           "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
           "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;"
           "text-align:left;vertical-align:top}th{background:#f4f4f4}.ok{color:#176117}"
           ".failed{color:#a11}.skipped{color:#555}.reproduced{color:#176117}.not-reproduced{color:#a11}"
           ".mixed{color:#8a5a00}.paper{color:#555;font-style:italic}</style></head><body>",
           f"<h1>{e(title)}</h1>", f"<p>{n_ok}/{len(rows)} notebooks completed. {e(_environment())}.</p>",
           "<p>Reproductions not verified by the original authors; each notebook lists its deviations.</p>"]
    out += _claims_html(claims or [])
    out += ["<h2>Notebooks</h2>", "<table><tr><th>notebook</th><th>status</th><th>duration</th><th>key metrics</th>"
           "<th>executed notebook</th></tr>"]
    for r in rows:
        m = r["marker"]
        st = m.get("status", "?")
        err = m.get("error") or {}
        st_txt = st if st == "ok" else f"{st}: cell {err.get('cell')}: {err.get('ename')}: {err.get('evalue', '')}"
        km = "<br>".join(
            f"{e(x['name'])} = <b>{e(_fmt(x['value']))}</b>" + (f" {e(x['unit'])}" if x.get("unit") else "")
            + (f" <span class='paper'>(paper {e(_fmt(x['paper']))})</span>" if x.get("paper") is not None else "")
            for x in r["key_metrics"]) or "–"
        link = e(m.get("output", ""))
        static = r.get("html")
        static = f" (<a href='{e(static)}'>static HTML</a>)" if static else ""
        out.append(f"<tr><td><a href='#{e(r['name'])}'>{e(r['name'])}</a></td><td class='{e(st)}'>{e(st_txt)}</td>"
                   f"<td>{m.get('duration', 0):.1f} s</td><td>{km}</td><td><a href='{link}'>{link}</a>{static}</td></tr>")
    out.append("</table>")
    for r in rows:
        out.append(f"<h2 id='{e(r['name'])}'>{e(r['name'])}: {e(r['title'])}</h2>")
        if r["paper"]:
            out.append(f"<p class='paper'>{e(r['paper'])}</p>")
        if r["problem"]:
            out.append(f"<p class='failed'><b>Damaged</b>: {e(r['problem'])}; rerun it</p>")
        if r["metrics"]:
            out.append("<table><tr><th>metric</th><th>ours</th><th>paper</th><th>note</th></tr>")
            for x in r["metrics"]:
                val = _fmt(x["value"]) + (f" {x['unit']}" if x.get("unit") else "")
                out.append(f"<tr><td>{e(x['name'])}</td><td>{e(val)}</td><td>{e(_fmt(x.get('paper')))}</td>"
                           f"<td>{e(x.get('note') or '')}</td></tr>")
            out.append("</table>")
        else:
            out.append("<p>No metrics recorded.</p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
