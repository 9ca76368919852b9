(function () {
  "use strict";
  // All data arrives as JSON; every string plotly draws was escaped by the report writer.
  if (window.performance && performance.mark) { performance.mark("stallscope-start"); }
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var T0 = data.t0;
  var zone = data.zone;
  var TR = zone.transitions || [];
  var showLocal = false;
  var viewRange = null; // [utcMs, utcMs] of the shared zoom, null = whole window
  var drawn = {}; // chart id -> {el, spec, kind}
  var syncing = false;
  var SEV = { critical: "#c62828", high: "#c62828", medium: "#ef6c00", low: "#d4a017", info: "#5b7fb8" };
  var CONFIG = { displaylogo: false, responsive: true, scrollZoom: false,
                 modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d"] };

  // -- time: plotly draws date values as wall time, so we hand it the wall time we mean --
  function transitionIndex(utcMs) {
    var lo = 0, hi = TR.length - 1, found = 0;
    while (lo <= hi) {
      var mid = (lo + hi) >> 1;
      if (TR[mid][0] <= utcMs) { found = mid; lo = mid + 1; } else { hi = mid - 1; }
    }
    return found;
  }
  function transitionAt(utcMs) { return TR[transitionIndex(utcMs)] || [0, 0, "UTC"]; }
  // Local wall time skips an hour when clocks go forward: hide it on the axis. When they go
  // back an hour repeats; lines are broken at every change so they never run backwards.
  function rangebreaks() {
    var out = [];
    if (!showLocal) { return out; }
    for (var i = 1; i < TR.length; i++) {
      var jump = TR[i][1] - TR[i - 1][1];
      if (jump > 0) { out.push({ values: [wallString(TR[i][0] + TR[i - 1][1], true)], dvalue: jump }); }
    }
    return out;
  }
  function lineXY(tr) {
    var x = tr.t.map(disp);
    if (!showLocal || TR.length < 2) { return { x: x, y: tr.y }; }
    var xs = [], ys = [], prev = -1;
    for (var i = 0; i < x.length; i++) {
      var k = transitionIndex(T0 + tr.t[i]);
      if (prev >= 0 && k !== prev) { xs.push(x[i - 1]); ys.push(null); }
      xs.push(x[i]); ys.push(tr.y[i]); prev = k;
    }
    return { x: xs, y: ys };
  }
  function wall(utcMs) { return showLocal ? utcMs + transitionAt(utcMs)[1] : utcMs; }
  function disp(rel) { return wall(T0 + rel); }
  function unwall(wallMs) {
    if (!showLocal) { return wallMs; }
    var guess = wallMs - transitionAt(wallMs)[1];
    return wallMs - transitionAt(guess)[1];
  }
  function pad(n, w) { n = String(n); while (n.length < (w || 2)) { n = "0" + n; } return n; }
  function wallString(ms, withMs) {
    var d = new Date(ms);
    var s = d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " +
      pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds());
    return withMs ? s + "." + pad(d.getUTCMilliseconds(), 3) : s;
  }
  function offsetLabel(off) {
    var m = Math.round(Math.abs(off) / 60000);
    return "UTC" + (off < 0 ? "-" : "+") + pad(Math.floor(m / 60)) + ":" + pad(m % 60);
  }
  function zoneSuffix(utcMs) {
    if (!showLocal) { return "UTC"; }
    var t = transitionAt(utcMs);
    return t[2] || offsetLabel(t[1]);
  }
  function label(iso) {
    var ms = Date.parse(iso);
    if (isNaN(ms)) { return iso; }
    return wallString(wall(ms), false) + " " + zoneSuffix(ms);
  }
  function zoneName() { return showLocal ? zone.label : "UTC"; }
  function parseWall(value) {
    if (typeof value === "number") { return value; }
    var text = String(value).replace(" ", "T");
    if (!/[zZ]$/.test(text)) { text += "Z"; }
    return Date.parse(text);
  }

  // -- traces ---------------------------------------------------------------------------
  function traceOf(tr, unit) {
    var x;
    if (tr.kind === "line") {
      var xy = lineXY(tr);
      return { type: "scatter", mode: tr.t.length < 400 ? "lines+markers" : "lines", name: tr.name, x: xy.x, y: xy.y,
               line: { width: 1.4 }, marker: { size: 3 }, connectgaps: false,
               hovertemplate: "%{y:.4~g} " + unit + "<extra>" + tr.name + "</extra>" };
    }
    if (tr.kind === "span") {
      x = tr.t.map(function (t, i) { return disp(t + tr.w[i] / 2); });
      return { type: "bar", name: tr.name, x: x, y: tr.y, width: tr.w, base: 0, hovertext: tr.text,
               marker: { color: "rgba(198,40,40,0.55)", line: { width: 1, color: "#c62828" } },
               hovertemplate: "%{hovertext}<br>%{y:.0f} ms<extra>slow callback</extra>" };
    }
    if (tr.kind === "marker" && tr.category) {
      return { type: "scatter", mode: "markers", name: tr.name, x: tr.t.map(disp),
               y: tr.t.map(function () { return tr.category; }), hovertext: tr.text,
               marker: { size: 8, symbol: "diamond", color: SEV[tr.severity] || "#5b7fb8", opacity: 0.8 },
               hovertemplate: "%{hovertext}<extra>" + tr.name + "</extra>" };
    }
    if (tr.kind === "marker") {
      return { type: "scatter", mode: "markers", name: tr.name, x: tr.t.map(disp), y: tr.y, yaxis: "y2",
               hovertext: tr.text, marker: { size: 6, symbol: "x", color: "#6a1b9a" },
               hovertemplate: "%{y} per s<br>%{hovertext}<extra>" + tr.name + "</extra>" };
    }
    if (tr.kind === "coverage") {
      return { type: "bar", orientation: "h", name: tr.name, y: tr.y, hovertext: tr.text,
               base: tr.t.map(disp), x: tr.t.map(function (t, i) { return disp(t + tr.w[i]) - disp(t); }),
               marker: { color: "rgba(47,75,124,0.6)" }, showlegend: false,
               hovertemplate: "%{hovertext}<extra></extra>" };
    }
    return null;
  }

  function windowShapes() {
    // a window covering most of the timeline would tint everything: it gets a band on top only
    return (data.windows || []).map(function (w) {
      var wide = (w.t1 - w.t0) > 0.5 * data.span;
      return { type: "rect", xref: "x", yref: "paper", x0: disp(w.t0), x1: disp(Math.max(w.t1, w.t0 + 500)),
               y0: wide ? 0.97 : 0, y1: 1, fillcolor: SEV[w.severity] || "#888", opacity: wide ? 0.5 : 0.12,
               line: { width: 0 }, layer: "below" };
    });
  }
  function windowLabels() {
    return (data.windows || []).map(function (w) {
      return { x: disp(w.t0), y: 1, xref: "x", yref: "paper", yanchor: "top", xanchor: "left",
               text: "F" + w.num, showarrow: false, font: { size: 10, color: SEV[w.severity] || "#555" } };
    });
  }

  function currentRange() {
    if (!viewRange) { return null; }
    return [wallString(wall(viewRange[0]), true), wallString(wall(viewRange[1]), true)];
  }

  function lanePlot(lane, last) {
    var unit = lane.unit || "";
    var traces = lane.traces.map(function (t) { return traceOf(t, unit); }).filter(Boolean);
    var cats = 0;
    if (lane.categorical) {
      var seen = {};
      lane.traces.forEach(function (t) { (t.category ? [t.category] : t.y).forEach(function (c) { seen[c] = 1; }); });
      cats = Object.keys(seen).length;
    }
    var hasY2 = lane.traces.some(function (t) { return t.kind === "marker" && !t.category; });
    var height = lane.categorical ? Math.max(120, 60 + 22 * cats) : 190;
    var range = currentRange();
    var layout = {
      height: height, margin: { l: 70, r: 56, t: 6, b: last ? 52 : 26 },
      xaxis: { type: "date", showspikes: true, spikemode: "across", spikethickness: 1, spikedash: "dot",
               spikecolor: "#666", range: range || [wallString(disp(0), true), wallString(disp(data.span), true)],
               autorange: false, tickfont: { size: 10 }, rangebreaks: rangebreaks(),
               title: last ? { text: "time (" + zoneName() + ")", font: { size: 11 } } : undefined },
      yaxis: lane.categorical ? { type: "category", ticklabelposition: "inside", tickfont: { size: 10 },
                                  fixedrange: true, automargin: false }
                              : { rangemode: "tozero", fixedrange: true, tickfont: { size: 10 }, title: { text: unit, font: { size: 10 } } },
      showlegend: !lane.categorical || lane.key === "events",
      legend: { orientation: "h", x: 0, y: 1, yanchor: "bottom", font: { size: 10 } },
      hovermode: lane.categorical || lane.key === "loop" ? "closest" : "x unified",
      hoverlabel: { namelength: 40 },
      barmode: "overlay", bargap: 0, shapes: windowShapes(), annotations: lane.key === data.lanes[0].key ? windowLabels() : [],
      paper_bgcolor: "#fff", plot_bgcolor: "#fcfcfd"
    };
    if (hasY2) {
      layout.yaxis2 = { overlaying: "y", side: "right", rangemode: "tozero", fixedrange: true, tickfont: { size: 10 },
                        title: { text: "events/s", font: { size: 10 } }, showgrid: false };
    }
    if (lane.categorical) { layout.margin.t = lane.key === "events" ? 22 : 6; }
    if (lane.key !== "events" && lane.categorical) { layout.showlegend = false; }
    return { traces: traces, layout: layout };
  }

  function evidencePlot(ev) {
    var unit = "";
    var traces = ev.traces.map(function (t) { return traceOf(t, unit); }).filter(Boolean);
    var shapes = [{ type: "rect", xref: "x", yref: "paper", x0: disp(ev.window[0]), x1: disp(Math.max(ev.window[1], ev.window[0] + 500)),
                    y0: 0, y1: 1, fillcolor: SEV[ev.severity] || "#888", opacity: 0.15, line: { width: 0 }, layer: "below" }];
    return { traces: traces, layout: {
      height: 200, margin: { l: 56, r: 12, t: 6, b: 40 }, showlegend: traces.length > 1,
      legend: { orientation: "h", x: 0, y: 1, yanchor: "bottom", font: { size: 10 } },
      xaxis: { type: "date", range: [wallString(disp(ev.range[0]), true), wallString(disp(ev.range[1]), true)],
               tickfont: { size: 10 }, rangebreaks: rangebreaks(),
               title: { text: "time (" + zoneName() + ")", font: { size: 10 } } },
      yaxis: { rangemode: "tozero", tickfont: { size: 10 } }, hovermode: "x unified", shapes: shapes,
      paper_bgcolor: "#fff", plot_bgcolor: "#fcfcfd" } };
  }

  function draw(id) {
    var item = drawn[id];
    var plot = item.kind === "evidence" ? evidencePlot(item.spec) : lanePlot(item.spec, item.last);
    return window.Plotly.react(item.el, plot.traces, plot.layout, CONFIG);
  }

  function register(spec, kind, last) {
    var el = document.getElementById(spec.id);
    if (!el || !spec.traces || !spec.traces.length) { return null; }
    drawn[spec.id] = { el: el, spec: spec, kind: kind, last: !!last };
    return spec.id;
  }

  // -- one shared time axis -------------------------------------------------------------
  function onRelayout(id, ev) {
    if (syncing || drawn[id].kind === "evidence") { return; }
    var r0 = ev["xaxis.range[0]"], r1 = ev["xaxis.range[1]"];
    if (r0 === undefined && ev["xaxis.range"]) { r0 = ev["xaxis.range"][0]; r1 = ev["xaxis.range"][1]; }
    if (r0 !== undefined) { viewRange = [unwall(parseWall(r0)), unwall(parseWall(r1))]; }
    else if (ev["xaxis.autorange"]) { viewRange = null; }
    else { return; }
    var range = currentRange() || [wallString(disp(0), true), wallString(disp(data.span), true)];
    syncing = true;
    var jobs = Object.keys(drawn).filter(function (k) { return k !== id && drawn[k].kind !== "evidence"; })
      .map(function (k) { return window.Plotly.relayout(drawn[k].el, { "xaxis.range": range, "xaxis.autorange": false }); });
    if (ev["xaxis.autorange"]) { jobs.push(window.Plotly.relayout(drawn[id].el, { "xaxis.range": range, "xaxis.autorange": false })); }
    Promise.all(jobs).then(function () { syncing = false; }, function () { syncing = false; });
  }

  function nextTask() { return new Promise(function (resolve) { setTimeout(resolve, 0); }); }
  function drawAll(ids) {
    // one chart per task: the page stays responsive and paints lane by lane
    return ids.reduce(function (p, id) {
      return p.then(nextTask).then(function () {
        return draw(id).then(function () {
          var item = drawn[id];
          if (!item.hooked) {
            item.hooked = true;
            item.el.on("plotly_relayout", function (ev) { onRelayout(id, ev); });
          }
        });
      });
    }, Promise.resolve());
  }

  function relabel() {
    document.querySelectorAll(".ts").forEach(function (span) {
      var iso = span.getAttribute("data-ts");
      if (iso) { span.textContent = label(iso); span.title = iso; }
    });
    document.getElementById("tz-current").textContent = zoneName();
    var toggle = document.getElementById("tz-toggle");
    if (toggle) { toggle.textContent = showLocal ? "show UTC" : "show bundle-local time (" + zone.label + ")"; }
    document.documentElement.setAttribute("data-zone", showLocal ? "local" : "utc");
  }

  // -- crosshair across lanes -----------------------------------------------------------
  function crosshair() {
    var box = document.getElementById("lanes"), line = document.getElementById("crosshair");
    if (!box || !line) { return; }
    box.addEventListener("mousemove", function (e) {
      var r = box.getBoundingClientRect(), x = e.clientX - r.left;
      if (x < 70 || x > r.width - 56) { line.hidden = true; return; }
      line.style.left = x + "px"; line.hidden = false;
    });
    box.addEventListener("mouseleave", function () { line.hidden = true; });
  }

  // -- sortable tables ------------------------------------------------------------------
  function sortable() {
    document.querySelectorAll("table.sortable").forEach(function (table) {
      table.querySelectorAll("th").forEach(function (th, col) {
        th.addEventListener("click", function () {
          var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
          var dir = th.getAttribute("aria-sort") === "descending" ? 1 : -1;
          table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
          th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
          function key(row) {
            var cell = row.cells[col]; if (!cell) { return ""; }
            var ts = cell.querySelector(".ts");
            if (ts) { return Date.parse(ts.getAttribute("data-ts")) || 0; }
            var text = cell.textContent.trim(), num = parseFloat(text.replace(/[^0-9.eE+-]/g, ""));
            return /^-?[0-9.]/.test(text) && !isNaN(num) ? num : text.toLowerCase();
          }
          rows.sort(function (a, b) {
            var ka = key(a), kb = key(b);
            if (typeof ka === typeof kb) { return ka < kb ? -dir : ka > kb ? dir : 0; }
            return typeof ka === "number" ? -1 : 1;
          });
          rows.forEach(function (r) { body.appendChild(r); });
        });
      });
    });
  }

  // -- start ------------------------------------------------------------------------------
  var laneIds = [], evidenceIds = [], extraIds = [];
  data.lanes.forEach(function (lane, i) {
    var id = register(lane, "lane", i === data.lanes.length - 1);
    if (id) { laneIds.push(id); }
  });
  data.evidence.forEach(function (ev) { var id = register(ev, "evidence"); if (id) { evidenceIds.push(id); } });
  data.extra.forEach(function (lane) { var id = register(lane, "lane", false); if (id) { extraIds.push(id); } });
  var extraDrawn = false;
  var more = document.getElementById("more-metrics");
  if (more) {
    more.addEventListener("toggle", function () {
      if (more.open && !extraDrawn) {
        extraDrawn = true;
        drawAll(extraIds).then(function () { document.body.setAttribute("data-extra-rendered", "1"); });
      }
    });
  }
  var toggle = document.getElementById("tz-toggle");
  if (toggle) {
    toggle.addEventListener("click", function () {
      showLocal = !showLocal;
      relabel();
      var ids = laneIds.concat(evidenceIds).concat(extraDrawn ? extraIds : []);
      document.body.removeAttribute("data-rendered");
      drawAll(ids).then(function () { document.body.setAttribute("data-rendered", "1"); });
    });
  }
  relabel();
  sortable();
  crosshair();
  if (!window.Plotly) {
    document.querySelectorAll(".chart").forEach(function (el) { el.textContent = "charting library failed to load"; });
    return;
  }
  drawAll(laneIds.concat(evidenceIds)).then(function () {
    if (window.performance && performance.mark) { performance.mark("stallscope-rendered"); }
    document.body.setAttribute("data-rendered", "1");
  }, function (err) {
    document.body.setAttribute("data-rendered", "error");
    throw err;
  });
})();
