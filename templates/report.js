(function () {
  "use strict";
  var charts = JSON.parse(document.getElementById("report-data").textContent);
  var toggle = document.getElementById("tz-toggle");
  var localName = toggle.getAttribute("data-local");
  var localOffsetMin = parseInt(toggle.getAttribute("data-offset"), 10) || 0;
  var showLocal = false;

  function shift(iso) {
    // Plotly draws naive strings as given: we hand it wall-clock strings of the chosen zone.
    if (!iso) { return iso; }
    var ms = Date.parse(iso) + (showLocal ? localOffsetMin * 60000 : 0);
    return new Date(ms).toISOString().replace("Z", "").replace("T", " ");
  }
  function label(iso) {
    if (!iso) { return ""; }
    return shift(iso).slice(0, 19) + (showLocal ? " " + localName : " UTC");
  }
  function draw() {
    charts.forEach(function (chart) {
      var el = document.getElementById(chart.id);
      if (!el || !window.Plotly) { return; }
      var traces = chart.series.map(function (s) {
        return { x: s.x.map(shift), y: s.y, name: s.name, type: "scatter", mode: "lines", line: { width: 1.5 } };
      });
      var layout = { margin: { l: 50, r: 10, t: 10, b: 40 }, xaxis: { type: "date", title: { text: showLocal ? "time (" + localName + ")" : "time (UTC)" } },
                     yaxis: { title: { text: chart.unit } }, legend: { orientation: "h" }, hovermode: "x unified" };
      window.Plotly.react(el, traces, layout, { displaylogo: false, responsive: true });
    });
    document.querySelectorAll(".ts").forEach(function (span) {
      var iso = span.getAttribute("data-ts");
      if (iso) { span.textContent = label(iso); }
    });
    document.getElementById("tz-current").textContent = showLocal ? localName : "UTC";
    toggle.textContent = showLocal ? "show UTC" : "show " + localName;
  }
  // one shared time axis: zooming one chart zooms all
  var syncing = false;
  function sync(source) {
    source.on("plotly_relayout", function (ev) {
      if (syncing) { return; }
      var update = {};
      if (ev["xaxis.range[0]"]) { update["xaxis.range"] = [ev["xaxis.range[0]"], ev["xaxis.range[1]"]]; }
      else if (ev["xaxis.autorange"]) { update["xaxis.autorange"] = true; }
      else { return; }
      syncing = true;
      charts.forEach(function (c) { var el = document.getElementById(c.id); if (el && el !== source) { window.Plotly.relayout(el, update); } });
      syncing = false;
    });
  }
  toggle.addEventListener("click", function () { showLocal = !showLocal; draw(); });
  draw();
  charts.forEach(function (c) { var el = document.getElementById(c.id); if (el && el.on) { sync(el); } });
})();
