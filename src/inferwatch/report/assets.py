"""The report page's inline CSS and script: constants, with no data in them (data goes in escaped
HTML attributes), so nothing a client sent can become code."""

from __future__ import annotations

# The page loads nothing: no fonts, no scripts, no images beyond its own inline SVG.
CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
                           "img-src data:; base-uri 'none'; form-action 'none'")

REFERENCE_COLOUR = "#5b7fa6"
CURRENT_COLOUR = "#e8833a"

CSS = """
:root { --ref: %(ref)s; --cur: %(cur)s; --ink: #1f2933; --muted: #616e7c; --line: #d9e2ec;
        --bad: #c0392b; --bad-bg: #fdecea; --good: #1e7b4a; --good-bg: #e8f6ee; --na: #7b8794; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); background: #f5f7fa; }
main { max-width: 1200px; margin: 0 auto; padding: 20px 24px 48px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 10px; }
h3 { font-size: 15px; margin: 0 0 4px; overflow-wrap: anywhere; }
.meta { color: var(--muted); margin: 0; }
.verdict { margin: 16px 0; padding: 14px 18px; border-radius: 6px; border-left: 6px solid; }
.verdict strong { font-size: 17px; display: block; }
.verdict.drift { background: var(--bad-bg); border-color: var(--bad); }
.verdict.ok { background: var(--good-bg); border-color: var(--good); }
.verdict.na { background: #eef2f6; border-color: var(--na); }
table { border-collapse: collapse; width: 100%%; background: #fff; border: 1px solid var(--line); }
th, td { padding: 6px 10px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th:first-child, td:first-child, th.text, td.text { text-align: left; }
td:first-child { white-space: normal; overflow-wrap: anywhere; max-width: 320px; }
thead th { background: #eef2f6; position: sticky; top: 0; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th::after { content: " \\2195"; color: #9aa5b1; font-size: 11px; }
table.sortable th[aria-sort=ascending]::after { content: " \\25B2"; color: var(--ink); }
table.sortable th[aria-sort=descending]::after { content: " \\25BC"; color: var(--ink); }
tbody tr:hover { background: #f0f4f8; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; }
.badge.drift { background: var(--bad-bg); color: var(--bad); }
.badge.ok { background: var(--good-bg); color: var(--good); }
.badge.na { background: #eef2f6; color: var(--na); }
.legend { color: var(--muted); margin: 6px 0 12px; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; vertical-align: -1px;
          margin: 0 4px 0 12px; }
.swatch.ref { background: var(--ref); } .swatch.cur { background: var(--cur); }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 14px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 12px 14px; }
.card.drift { border-top: 4px solid var(--bad); }
.card.ok { border-top: 4px solid var(--good); }
.card.na { border-top: 4px solid var(--na); }
.card .test { color: var(--muted); margin: 0 0 6px; font-size: 13px; }
.card .evidence { color: var(--muted); margin: -4px 0 6px; padding-left: 18px; font-size: 12px; }
.card svg { display: block; width: 100%%; height: auto; }
.card dl { display: grid; grid-template-columns: auto 1fr; gap: 2px 12px; margin: 6px 0 0; font-size: 13px; }
.card dt { color: var(--muted); }
.card dd { margin: 0; }
.chart text { font-size: 10px; fill: #52606d; }
.chart .ref { fill: var(--ref); } .chart .cur { fill: var(--cur); }
.chart .grid { stroke: #e4e7eb; } .chart .axis { stroke: #9aa5b1; }
.empty { color: var(--muted); font-style: italic; }
footer { margin-top: 32px; color: var(--muted); font-size: 12px; }
""" % {"ref": REFERENCE_COLOUR, "cur": CURRENT_COLOUR}

# Sorts every table.sortable by a header click (again: the other way) or Enter on a focused header;
# ?sort=<column key>&order=asc|desc sorts on load. Cells sort by data-value (numbers numerically),
# empty values last either way. Sets data-report-ready on <html> once it ran, so a test can tell.
SCRIPT = r"""
(function () {
  "use strict";
  function cellKey(cell, numeric) {
    var raw = cell.hasAttribute("data-value") ? cell.getAttribute("data-value") : cell.textContent;
    if (raw === "") { return null; }
    if (numeric) { var x = parseFloat(raw); return isNaN(x) ? null : x; }
    return raw.toLowerCase();
  }
  function sortBy(table, column, descending) {
    var headers = table.tHead.rows[0].cells;
    var numeric = headers[column].getAttribute("data-type") === "number";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = cellKey(a.cells[column], numeric), y = cellKey(b.cells[column], numeric);
      if (x === null || y === null) { return x === y ? 0 : (x === null ? 1 : -1); }
      var order = numeric ? x - y : (x < y ? -1 : (x > y ? 1 : 0));
      return descending ? -order : order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    for (var i = 0; i < headers.length; i++) { headers[i].removeAttribute("aria-sort"); }
    headers[column].setAttribute("aria-sort", descending ? "descending" : "ascending");
    table.setAttribute("data-sorted-by", headers[column].getAttribute("data-key") || String(column));
  }
  function wire(table) {
    var headers = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(headers, function (header, column) {
      header.tabIndex = 0;
      var toggle = function () {
        var descending = header.getAttribute("aria-sort") === "ascending" ||
          (!header.hasAttribute("aria-sort") && header.getAttribute("data-type") === "number");
        sortBy(table, column, descending);
      };
      header.addEventListener("click", toggle);
      header.addEventListener("keydown", function (event) { if (event.key === "Enter") { toggle(); } });
    });
  }
  var tables = document.querySelectorAll("table.sortable");
  Array.prototype.forEach.call(tables, wire);
  var params = new URLSearchParams(window.location.search);
  var wanted = params.get("sort");
  if (wanted) {
    Array.prototype.forEach.call(tables, function (table) {
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, column) {
        if (header.getAttribute("data-key") === wanted) { sortBy(table, column, params.get("order") === "desc"); }
      });
    });
  }
  document.documentElement.setAttribute("data-report-ready", "1");
})();
"""
