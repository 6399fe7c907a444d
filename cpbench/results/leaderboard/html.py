"""One self-contained HTML page: inline CSS, JS and SVG, plots as data: URIs, no network.

What the page adds to the tables (whose numbers come from `cpbench.results.leaderboard.tables` / `build`):
- a short "how to read this" (coverage, set size, UAcc, Δ and intervals, categories, flags) and the task names
  spelled out with their datasets;
- one section per conformal score, then the analyses; a navigation bar;
- filters by model, recipe and task that apply to every table, chart and map at once (plus a per-table text filter),
  sortable columns;
- inline SVG charts of Δ accuracy and Δ set size with their intervals per score, and a decoupling map (recipe x
  task, coloured by category) that is an HTML grid, so it grows with the results instead of shrinking into a PNG;
- analyses with nothing to show (every sweep too short for thresholds, too few model sizes for the size effect)
  collapsed to one line that says why.
"""

from __future__ import annotations

import base64
import html
import math
from typing import Any

import pandas as pd

from cpbench.results.leaderboard.tables import Table

TASK_ORDER = ("qa", "rc", "ci", "drs", "ds", "avg")
_FALLBACK_TITLES = {
    "qa": "Question answering (MMLU)", "rc": "Reading comprehension (CosmosQA)",
    "ci": "Commonsense inference (HellaSwag)", "drs": "Dialogue response selection (HaluEval dialogue)",
    "ds": "Document summarization (HaluEval summarization)", "avg": "Average over the tasks",
}  # fmt: skip
CATEGORY_COLOURS = {
    "unaffected": "#d7ecd9", "hidden-risk": "#f9d2c5", "accuracy-only": "#fde9b5", "coupled": "#e9c0e9",
    "inconclusive": "#e6e6e6", "unpaired": "#ffffff",
}  # fmt: skip
CATEGORY_TEXT = {
    "unaffected": "accuracy kept and set size holds",
    "hidden-risk": "accuracy kept but the sets grow: uncertainty degrades where accuracy does not show it",
    "accuracy-only": "accuracy drops, set size holds",
    "coupled": "accuracy drops and the sets grow",
    "inconclusive": "the data cannot tell (an interval straddles a tolerance); the note says roughly how many items "
    "would decide it",
    "unpaired": "not compared (no baseline, other items or analysis key); the note says why",
}

CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;padding:1rem 1.5rem;color:#1b1b1b;
background:#fff;max-width:1400px}
h1{font-size:1.5rem;margin:.2rem 0 .6rem}h2{font-size:1.15rem;margin-top:1.8rem}h3{font-size:1rem;margin:.8rem 0 .3rem}
.prov{font-size:.85rem;color:#444;max-width:75rem}
.banner{background:#fff4d6;border:1px solid #e0b84c;padding:.6rem .8rem;max-width:75rem}
nav.top{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:.4rem 0;z-index:5;
display:flex;flex-wrap:wrap;gap:.3rem 1rem;align-items:center;font-size:.9rem}
nav.top a{text-decoration:none;color:#1f5fa8}
.filters{display:flex;flex-wrap:wrap;gap:.4rem .9rem;align-items:center;font-size:.85rem;margin:.5rem 0}
.filters select{max-width:16rem}
details.guide{background:#f6f8fa;border:1px solid #d9dee3;padding:.5rem .8rem;max-width:75rem;font-size:.88rem}
details.guide summary{font-weight:600;cursor:pointer}
dl.terms{display:grid;grid-template-columns:max-content 1fr;gap:.2rem .8rem;margin:.4rem 0}
dl.terms dt{font-weight:600}dl.terms dd{margin:0}
.wrap{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:.8rem;margin:.4rem 0}
th,td{border:1px solid #ccc;padding:.2rem .45rem;text-align:left;white-space:nowrap}
table.sortable th{background:#f1f3f5;cursor:pointer;user-select:none;position:sticky;top:0}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
tbody tr:nth-child(even){background:#fafafa}
input.filter{margin:.3rem 0;padding:.25rem .4rem;width:22rem;max-width:90%}
.count{font-size:.8rem;color:#555;margin-left:.6rem}
ul.legend{font-size:.8rem;color:#444}
details.empty{font-size:.9rem;color:#444;margin:.6rem 0}details.empty summary{cursor:pointer}
figure{display:inline-block;margin:.5rem 1rem .5rem 0;max-width:100%}figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.8rem;color:#444}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(520px,100%),1fr));gap:.5rem 1.5rem}
.chart{max-width:100%;min-width:0;overflow-x:auto}.chart svg{display:block;width:100%;max-width:100%;height:auto}
table.map td{min-width:5.5rem;text-align:center;font-size:.75rem}table.map th{background:#f1f3f5}
.swatch{display:inline-block;width:.9rem;height:.9rem;border:1px solid #999;vertical-align:middle;margin-right:.25rem}
"""

# Sorting: numbers (including "+1.23", "12.5 bits", "[-0.1, 0.2]" by their first number) sort numerically,
# everything else as text; empty cells always last. A table's text filter hides rows whose text lacks a query word;
# the page filters (model / recipe / task) hide rows, task columns, chart rows and map cells everywhere.
JS = """
(function(){
  function key(text){
    var t=text.trim();
    if(t==='')return null;
    var m=t.match(/^\\[?\\s*([+-]?\\d+(?:\\.\\d+)?(?:e[+-]?\\d+)?)/i);
    return m?{n:parseFloat(m[1]),s:t}:{n:null,s:t.toLowerCase()};
  }
  function compare(a,b){
    if(a===null&&b===null)return 0;if(a===null)return 1;if(b===null)return -1;
    if(a.n!==null&&b.n!==null)return a.n-b.n;
    if(a.n!==null)return -1;if(b.n!==null)return 1;
    return a.s<b.s?-1:(a.s>b.s?1:0);
  }
  document.querySelectorAll('table.sortable').forEach(function(table){
    var heads=table.querySelectorAll('thead th');
    heads.forEach(function(th,col){
      th.addEventListener('click',function(){
        var asc=th.getAttribute('aria-sort')!=='ascending';
        heads.forEach(function(h){h.removeAttribute('aria-sort');});
        th.setAttribute('aria-sort',asc?'ascending':'descending');
        var body=table.tBodies[0];
        var rows=Array.prototype.slice.call(body.rows);
        var keyed=rows.map(function(r,i){return {r:r,k:key(r.cells[col]?r.cells[col].textContent:''),i:i};});
        keyed.sort(function(x,y){
          var c=compare(x.k,y.k);
          if(x.k!==null&&y.k!==null&&!asc)c=-c;
          return c!==0?c:x.i-y.i;
        });
        keyed.forEach(function(e){body.appendChild(e.r);});
      });
    });
  });
  var page={model:'',recipe:'',task:''};
  function colIndex(table,name){
    var heads=Array.prototype.map.call(table.tHead.rows[0].cells,function(c){return c.getAttribute('data-col')||'';});
    return heads.indexOf(name);
  }
  function pageOk(row,table){
    var ok=true;
    ['model','recipe','task'].forEach(function(k){
      if(!page[k])return;
      var i=colIndex(table,k);
      if(i>=0&&row.cells[i]&&row.cells[i].textContent.trim()!==page[k])ok=false;
    });
    return ok;
  }
  function applyTable(table){
    var input=document.querySelector("input.filter[data-table='"+table.id+"']");
    var words=input?input.value.toLowerCase().split(/\\s+/).filter(Boolean):[];
    var shown=0,rows=table.tBodies[0].rows;
    for(var i=0;i<rows.length;i++){
      var text=rows[i].textContent.toLowerCase();
      var ok=words.every(function(w){return text.indexOf(w)>=0;})&&pageOk(rows[i],table);
      rows[i].hidden=!ok;if(ok)shown++;
    }
    Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,c){
      var t=th.getAttribute('data-task');
      var hide=!!(page.task&&t&&t!==page.task);
      th.hidden=hide;
      for(var r=0;r<rows.length;r++){if(rows[r].cells[c])rows[r].cells[c].hidden=hide;}
    });
    var count=document.getElementById(table.id+'-count');
    if(count)count.textContent=shown+' of '+rows.length+' rows';
  }
  function applyAll(){
    document.querySelectorAll('table.sortable').forEach(applyTable);
    document.querySelectorAll('[data-model]').forEach(function(el){
      if(el.tagName==='TR'&&el.closest('table.sortable'))return;
      var ok=['model','recipe','task'].every(function(k){
        var v=el.getAttribute('data-'+k);return !page[k]||v===null||v===page[k];});
      if(el instanceof SVGElement){el.style.display=ok?'':'none';}else{el.hidden=!ok;}
    });
    document.querySelectorAll('table.map [data-task]').forEach(function(el){
      el.hidden=!!(page.task&&el.getAttribute('data-task')!==page.task);
    });
  }
  document.querySelectorAll('input.filter').forEach(function(input){
    var table=document.getElementById(input.getAttribute('data-table'));
    input.addEventListener('input',function(){applyTable(table);});
  });
  document.querySelectorAll('select.page-filter').forEach(function(sel){
    sel.addEventListener('change',function(){page[sel.getAttribute('data-key')]=sel.value;applyAll();});
  });
  applyAll();
})();
"""


def task_titles(tasks: list[str]) -> dict[str, str]:
    """Task code -> 'Question answering (MMLU)', from the task definitions (fallback: the built-in names)."""
    out = {}
    for t in tasks:
        title = _FALLBACK_TITLES.get(t, t)
        try:
            from cpbench.specs.tasks import load_task

            title = load_task(t).title or title
        except Exception:  # noqa: BLE001 - an unknown task (imported results) keeps its code
            pass
        out[t] = title
    return out


def _ordered_tasks(tasks: set[str]) -> list[str]:
    return sorted(tasks, key=lambda t: (TASK_ORDER.index(t) if t in TASK_ORDER else len(TASK_ORDER) - 1, t))


def _col_attrs(col: str, tasks: set[str]) -> str:
    """data-col names the columns the page filters read; data-task marks a main table's per-task columns."""
    e = html.escape
    low = col.lower()
    attrs = ""
    if low in ("model", "recipe", "task"):
        attrs += f' data-col="{low}"'
    head = col.split(" ", 1)[0]
    if " " in col and head in tasks:
        attrs += f' data-task="{e(head)}"'
    return attrs


def _empty_reason(t: Table) -> str | None:
    """One line saying why an analysis has nothing to show, or None when it has rows worth a table."""
    d = t.display
    if d.empty:
        return {"decoupling": "no compressed result could be paired with a baseline result",
                "thresholds": "no bit-width or sparsity sweep among the results",
                "size_effect": "no recipe was run on several model sizes",
                "rankings": "no cell has results for two or more recipes"}.get(t.name, "no rows")  # fmt: skip
    if t.name == "thresholds" and "Verdict" in d and (d["Verdict"] == "too-few-levels").all():
        return (f"every sweep here has too few levels to locate a threshold ({len(d)} cells marked "
                f"too-few-levels); run more members of a sweep (e.g. --quant gptq-bits)")  # fmt: skip
    if t.name == "size_effect" and "Models" in d and (pd.to_numeric(d["Models"], errors="coerce") < 3).all():
        most = int(pd.to_numeric(d["Models"], errors="coerce").max())
        return (f"the size effect needs one recipe on at least 3 model sizes; here at most {most} "
                f"({len(d)} cells)")  # fmt: skip
    if t.name == "rankings" and "Recipes" in d and (pd.to_numeric(d["Recipes"], errors="coerce") < 3).all():
        return f"rank agreement needs 3 or more recipes per cell; here at most {int(d['Recipes'].max())}"
    return None


def _table_html(t: Table, tasks: set[str]) -> str:
    e = html.escape
    tid = f"t-{t.name}"
    head = "".join(f"<th scope=\"col\"{_col_attrs(str(c), tasks)}>{e(str(c))}</th>" for c in t.display.columns)
    body = "\n".join(
        "<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in row) + "</tr>" for row in t.display.itertuples(index=False)
    )
    legend = "".join(f"<li>{e(line)}</li>" for line in t.legend)
    table = (
        f"<input class=\"filter\" type=\"search\" placeholder=\"Filter rows (all words must match)\" "
        f"data-table=\"{tid}\" aria-label=\"Filter {e(t.title)}\"><span class=\"count\" id=\"{tid}-count\"></span>"
        f"<div class=\"wrap\"><table class=\"sortable\" id=\"{tid}\"><thead><tr>{head}</tr></thead>"
        f"<tbody>\n{body}\n</tbody></table></div>" + (f"<ul class=\"legend\">{legend}</ul>" if legend else "")
    )
    why = _empty_reason(t)
    if why is not None:
        return (f"<section id=\"s-{t.name}\"><details class=\"empty\"><summary><strong>{e(t.title)}</strong>: "
                f"nothing to show: {e(why)}.</summary><p class=\"prov\">{e(t.provenance)}</p>{table}</details>"
                f"</section>")  # fmt: skip
    return f"<section id=\"s-{t.name}\"><h2>{e(t.title)}</h2><p class=\"prov\">{e(t.provenance)}</p>{table}</section>"


# ------------------------------------------------------------------------------------------------ charts
def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _forest(rows: pd.DataFrame, metric: str, label: str, scale: float, score: str) -> str:
    """SVG dot-and-interval chart of one delta per (model, recipe, task) row; 0 marked; colour = category."""
    e = html.escape
    rows = rows[[_finite(v) for v in rows[f"d_{metric}"]]]
    if rows.empty:
        return ""
    vals = [scale * float(v) for v in rows[f"d_{metric}"]]
    los = [scale * float(v) if _finite(v) else scale * float(d) for v, d in zip(rows[f"d_{metric}_lo"], rows[f"d_{metric}"])]
    his = [scale * float(v) if _finite(v) else scale * float(d) for v, d in zip(rows[f"d_{metric}_hi"], rows[f"d_{metric}"])]
    lo, hi = min(min(los), 0.0), max(max(his), 0.0)
    pad = (hi - lo) * 0.08 or 1.0
    lo, hi = lo - pad, hi + pad
    names = [f"{r['model']} / {r['recipe']} / {r['task']}" for _, r in rows.iterrows()]
    # the left margin fits the longest label (11 px text: under 6.6 px a character; the page scales the SVG down)
    left, width, row_h, top = max(120, int(6.6 * max(len(n) for n in names)) + 14), 420, 18, 28
    height = top + row_h * len(rows) + 24
    title = f"{label}, {score.upper()} (dot: estimate; bar: 95% interval)"
    width = max(width, int(7.2 * len(title)) + 8 - left - 20)  # 12 px semibold title: under 7.2 px a character
    total = left + width + 20

    def x(v: float) -> float:
        return left + (v - lo) / (hi - lo) * width

    parts = [f"<svg viewBox=\"0 0 {total} {height}\" width=\"{total}\" height=\"{height}\" "
             f"style=\"width:100%;max-width:{total}px;height:auto\" preserveAspectRatio=\"xMinYMin meet\" "
             f"role=\"img\" aria-label=\"{e(label)} ({score})\">",
             f"<text x=\"4\" y=\"14\" font-size=\"12\" font-weight=\"600\">{e(title)}</text>",
             f"<line x1=\"{x(0):.1f}\" y1=\"{top - 6}\" x2=\"{x(0):.1f}\" y2=\"{height - 20}\" stroke=\"#888\" "
             f"stroke-dasharray=\"3,3\"/>"]  # fmt: skip
    for i, ((_, r), v, a, b) in enumerate(zip(rows.iterrows(), vals, los, his)):
        y = top + i * row_h + row_h / 2
        colour = {"hidden-risk": "#c0392b", "coupled": "#8e44ad", "accuracy-only": "#d68910",
                  "unaffected": "#1e8449"}.get(str(r.get("category")), "#555")  # fmt: skip
        name = names[i]
        parts.append(
            f"<g data-model=\"{e(str(r['model']))}\" data-recipe=\"{e(str(r['recipe']))}\" "
            f"data-task=\"{e(str(r['task']))}\"><title>{e(name)}: {v:+.3f} [{a:+.3f}, {b:+.3f}] "
            f"({e(str(r.get('category')))})</title>"
            f"<text x=\"{left - 6}\" y=\"{y + 4:.1f}\" font-size=\"11\" text-anchor=\"end\">{e(name)}</text>"
            f"<line x1=\"{x(a):.1f}\" y1=\"{y:.1f}\" x2=\"{x(b):.1f}\" y2=\"{y:.1f}\" stroke=\"{colour}\" "
            f"stroke-width=\"2\"/><circle cx=\"{x(v):.1f}\" cy=\"{y:.1f}\" r=\"3.5\" fill=\"{colour}\"/></g>"
        )  # fmt: skip
    ticks = [lo + pad, hi - pad]
    if all(abs(x(0.0) - x(t)) > 40 for t in ticks):
        ticks.append(0.0)
    for tick in ticks:
        parts.append(f"<text x=\"{x(tick):.1f}\" y=\"{height - 6}\" font-size=\"10\" text-anchor=\"middle\">"
                     f"{tick:+.2f}</text>")  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def _charts_html(dec: pd.DataFrame | None) -> str:
    if dec is None or dec.empty or "d_acc" not in dec:
        return ""
    out = []
    for score in [s for s in ("lac", "aps", "raps", "aps_rand", "raps_rand") if s in set(dec["score"])]:
        rows = dec[dec["score"] == score].copy()
        rows["_t"] = [TASK_ORDER.index(t) if t in TASK_ORDER else 99 for t in rows["task"]]
        rows = rows.sort_values(["model", "recipe", "_t"], kind="mergesort")
        charts = [_forest(rows, "acc", "Δ accuracy (points) vs the baseline", 100.0, score),
                  _forest(rows, "set_size", "Δ mean set size (options) vs the baseline", 1.0, score)]  # fmt: skip
        charts = [c for c in charts if c]
        if charts:
            out.append(f"<h3>{html.escape(score.upper())}</h3><div class=\"charts\">"
                       + "".join(f"<div class=\"chart\">{c}</div>" for c in charts) + "</div>")  # fmt: skip
    if not out:
        return ""
    return ("<section id=\"s-charts\"><h2>Changes against the baseline, with intervals</h2><p class=\"prov\">Each "
            "row is one compressed cell; the dashed line is no change. A bar that crosses it is a change the data "
            "cannot distinguish from none. Colour: decoupling category.</p>" + "".join(out) + "</section>")


def _map_html(dec: pd.DataFrame | None, titles: dict[str, str]) -> str:
    """The decoupling map: one grid per score, rows = model / recipe, columns = tasks in benchmark order."""
    if dec is None or dec.empty or "category" not in dec:
        return ""
    e = html.escape
    tasks = _ordered_tasks(set(dec["task"]))
    blocks = []
    for score in [s for s in ("lac", "aps", "raps", "aps_rand", "raps_rand") if s in set(dec["score"])]:
        rows = dec[dec["score"] == score]
        head = "".join(f"<th data-task=\"{e(t)}\" title=\"{e(titles.get(t, t))}\">{e(t)}</th>" for t in tasks)
        body = []
        for (model, recipe), g in rows.groupby(["model", "recipe"], sort=True):
            by_task = {r["task"]: r for _, r in g.iterrows()}
            cells = []
            for t in tasks:
                r = by_task.get(t)
                if r is None:
                    cells.append(f"<td data-task=\"{e(t)}\"></td>")
                    continue
                cat = str(r["category"])
                tip = f"{model} / {recipe} / {t}: {cat}"
                if _finite(r.get("d_acc")) and _finite(r.get("d_set_size")):
                    tip += f"; Δacc {100 * float(r['d_acc']):+.1f} pts, Δset size {float(r['d_set_size']):+.2f}"
                cells.append(f"<td data-task=\"{e(t)}\" style=\"background:{CATEGORY_COLOURS.get(cat, '#fff')}\" "
                             f"title=\"{e(tip)}\">{e(cat)}</td>")  # fmt: skip
            body.append(f"<tr data-model=\"{e(str(model))}\" data-recipe=\"{e(str(recipe))}\"><th>{e(str(model))}"
                        f" / {e(str(recipe))}</th>{''.join(cells)}</tr>")  # fmt: skip
        blocks.append(f"<h3>{e(score.upper())}</h3><div class=\"wrap\"><table class=\"map\"><thead><tr><th>model / "
                      f"recipe</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")  # fmt: skip
    legend = " ".join(f"<span><span class=\"swatch\" style=\"background:{c}\"></span>{e(k)}</span>"
                      for k, c in CATEGORY_COLOURS.items())  # fmt: skip
    return (f"<section id=\"s-map\"><h2>Decoupling map</h2><p class=\"prov\">Category of every compressed cell "
            f"(hover for the deltas). {legend}</p>{''.join(blocks)}</section>")


# ------------------------------------------------------------------------------------------------ page
def _guide(titles: dict[str, str]) -> str:
    e = html.escape
    terms = [
        ("Acc", "accuracy: share of test items whose top option is the right one (chance: 1/6)."),
        ("Cov", "coverage: share of test items whose conformal prediction set contains the right answer; split "
                "conformal prediction guarantees at least 1 - alpha (90% at alpha 0.1) on average."),
        ("SS", "set size: mean number of options in the prediction set (1 = sure, 6 = knows nothing). At equal "
               "coverage, smaller is better: it is how uncertain the model is."),
        ("UAcc", "uncertainty-aware accuracy (Ye et al. 2024): Acc x sqrt(6) / SS, rewards accuracy with small "
                 "sets."),
        ("LAC / APS", "two conformal scores: LAC thresholds the probability of each option, APS the cumulative "
                      "probability of the ranked options (adaptive sets)."),
        ("Δ and intervals", "Δ = compressed minus baseline on the same items. Intervals on Δ are item-level 95% "
                            "intervals (they cover the difference on new items from the same population); a "
                            "category is decided only when its interval clears the tolerance."),
        ("Flags", "'sample': offline smoke-test items, not benchmark data. n1, n2, ...: model notes (e.g. a "
                  "baseline that was already quantized)."),
    ]
    cats = list(CATEGORY_TEXT.items())
    tasks = "".join(f"<dt>{e(t)}</dt><dd>{e(titles[t])}</dd>" for t in titles)
    return (
        "<details class=\"guide\" id=\"guide\" open><summary>How to read this</summary>"
        "<p>Each compressed model (recipe) is compared with its uncompressed baseline on six-option questions "
        "(A-F; E = \"I don't know\", F = \"None of the above\"). Accuracy says whether it is right; conformal "
        "prediction sets say how much it knows it might be wrong.</p>"
        f"<dl class=\"terms\">{''.join(f'<dt>{e(k)}</dt><dd>{e(v)}</dd>' for k, v in terms)}</dl>"
        f"<h3>Categories</h3><dl class=\"terms\">{''.join(f'<dt>{e(k)}</dt><dd>{e(v)}</dd>' for k, v in cats)}</dl>"
        f"<h3>Tasks</h3><dl class=\"terms tasks\">{tasks}</dl></details>"
    )


def _filters(tables: list[Table]) -> str:
    e = html.escape
    values: dict[str, set[str]] = {"model": set(), "recipe": set(), "task": set()}
    for t in tables:
        for col in t.display.columns:
            low = str(col).lower()
            if low in values:
                values[low].update(str(v) for v in t.display[col] if str(v))
    for t in tables:  # tasks that only appear as column prefixes of the main tables
        for col in t.display.columns:
            head = str(col).split(" ", 1)[0]
            if " " in str(col) and head in TASK_ORDER:
                values["task"].add(head)
    out = []
    for k in ("model", "recipe", "task"):
        opts = _ordered_tasks(values[k]) if k == "task" else sorted(values[k])
        options = "<option value=\"\">all</option>" + "".join(f"<option>{e(v)}</option>" for v in opts)
        out.append(f"<label>{k.capitalize()} <select class=\"page-filter\" data-key=\"{k}\" id=\"filter-{k}\">"
                   f"{options}</select></label>")  # fmt: skip
    return "<div class=\"filters\" id=\"filters\"><strong>Show only:</strong>" + "".join(out) + "</div>"


def render_page(tables: list[Table], images: dict[str, bytes], title: str, banner: str = "") -> str:
    e = html.escape
    dec = next((t.data for t in tables if t.name == "decoupling"), None)
    tasks: set[str] = set()
    for t in tables:
        if "Task" in t.display:
            tasks.update(str(v) for v in t.display["Task"] if str(v))
        for col in t.display.columns:
            head = str(col).split(" ", 1)[0]
            if " " in str(col) and (head in TASK_ORDER or head in tasks):
                tasks.add(head)
    titles = task_titles(_ordered_tasks(tasks))
    sections = "".join(_table_html(t, tasks) for t in tables)
    charts, heatmap = _charts_html(dec), _map_html(dec, titles)
    figures = "".join(
        f"<figure><img alt=\"{e(name)}\" src=\"data:image/png;base64,{base64.b64encode(data).decode()}\">"
        f"<figcaption>{e(name)}</figcaption></figure>"
        for name, data in sorted(images.items())
    )
    links = [("guide", "How to read this")]
    links += [(f"s-{t.name}", t.title.split(":")[0]) for t in tables]
    if charts:
        links.append(("s-charts", "Charts"))
    if heatmap:
        links.append(("s-map", "Decoupling map"))
    if figures:
        links.append(("s-plots", "Plots"))
    nav = "".join(f"<a href=\"#{i}\">{e(label)}</a>" for i, label in links)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
        # No network: forbid every fetch; inline style/script and data: images only.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{e(title)}</h1>" + (f"<p class=\"banner\">{e(banner)}</p>" if banner else "")
        + f"<nav class=\"top\">{nav}</nav>" + _filters(tables) + _guide(titles)
        + sections + charts + heatmap
        + (f"<section id=\"s-plots\"><h2>Plots</h2>{figures}</section>" if figures else "")
        + f"<script>{JS}</script></body></html>\n"
    )
