"""One self-contained HTML page: inline CSS and JS, plots as data: URIs, no network, sortable and filterable tables."""

from __future__ import annotations

import base64
import html

from cpbench.leaderboard.tables import Table

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem;color:#1b1b1b;background:#fff}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}
.prov{font-size:.85rem;color:#444;max-width:70rem}
.banner{background:#fff4d6;border:1px solid #e0b84c;padding:.6rem .8rem;max-width:70rem}
.wrap{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:.8rem;margin:.4rem 0}
th,td{border:1px solid #ccc;padding:.2rem .45rem;text-align:left;white-space:nowrap}
th{background:#f1f3f5;cursor:pointer;user-select:none;position:sticky;top:0}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
tbody tr:nth-child(even){background:#fafafa}
input.filter{margin:.3rem 0;padding:.25rem .4rem;width:22rem;max-width:90%}
.count{font-size:.8rem;color:#555;margin-left:.6rem}
ul.legend{font-size:.8rem;color:#444}
figure{display:inline-block;margin:.5rem 1rem .5rem 0}figure img{max-width:46rem;border:1px solid #ddd}
figcaption{font-size:.8rem;color:#444}
"""

# Sorting: numbers (including "+1.23", "12.5 bits", "[-0.1, 0.2]" by their first number) sort numerically,
# everything else as text; empty cells always last. Filtering hides rows whose text lacks every query word.
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
  document.querySelectorAll('input.filter').forEach(function(input){
    var table=document.getElementById(input.getAttribute('data-table'));
    var count=document.getElementById(input.getAttribute('data-table')+'-count');
    function apply(){
      var words=input.value.toLowerCase().split(/\\s+/).filter(Boolean);
      var shown=0,rows=table.tBodies[0].rows;
      for(var i=0;i<rows.length;i++){
        var text=rows[i].textContent.toLowerCase();
        var ok=words.every(function(w){return text.indexOf(w)>=0;});
        rows[i].hidden=!ok;if(ok)shown++;
      }
      count.textContent=shown+' of '+rows.length+' rows';
    }
    input.addEventListener('input',apply);apply();
  });
})();
"""


def _table_html(t: Table) -> str:
    e = html.escape
    tid = f"t-{t.name}"
    head = "".join(f"<th scope=\"col\">{e(str(c))}</th>" for c in t.display.columns)
    body = "\n".join(
        "<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in row) + "</tr>" for row in t.display.itertuples(index=False)
    )
    legend = "".join(f"<li>{e(line)}</li>" for line in t.legend)
    return (
        f"<section id=\"s-{t.name}\"><h2>{e(t.title)}</h2><p class=\"prov\">{e(t.provenance)}</p>"
        f"<input class=\"filter\" type=\"search\" placeholder=\"Filter rows (all words must match)\" "
        f"data-table=\"{tid}\" aria-label=\"Filter {e(t.title)}\"><span class=\"count\" id=\"{tid}-count\"></span>"
        f"<div class=\"wrap\"><table class=\"sortable\" id=\"{tid}\"><thead><tr>{head}</tr></thead>"
        f"<tbody>\n{body}\n</tbody></table></div>" + (f"<ul class=\"legend\">{legend}</ul>" if legend else "")
        + "</section>"
    )


def render_page(tables: list[Table], images: dict[str, bytes], title: str, banner: str = "") -> str:
    e = html.escape
    nav = " · ".join(f"<a href=\"#s-{t.name}\">{e(t.title.split(':')[0])}</a>" for t in tables)
    figures = "".join(
        f"<figure><img alt=\"{e(name)}\" src=\"data:image/png;base64,{base64.b64encode(data).decode()}\">"
        f"<figcaption>{e(name)}</figcaption></figure>"
        for name, data in sorted(images.items())
    )
    plots_link = ' · <a href="#s-plots">Plots</a>' if figures else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
        # No network: forbid every fetch; inline style/script and data: images only.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{e(title)}</h1>" + (f"<p class=\"banner\">{e(banner)}</p>" if banner else "")
        + f"<nav>{nav}{plots_link}</nav>"
        + "".join(_table_html(t) for t in tables)
        + (f"<section id=\"s-plots\"><h2>Plots</h2>{figures}</section>" if figures else "")
        + f"<script>{JS}</script></body></html>\n"
    )
