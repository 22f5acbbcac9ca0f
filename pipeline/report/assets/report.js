// Helpers shared by every report page: charts through BokehJS, shaded token contexts,
// and the jump-to-latent box. Pages call these from their DOMContentLoaded handler with
// the inline DATA; nothing here fetches anything, so pages work from file://.
"use strict";

const PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6"];

// A figure in the container `id`, sized to it. `extra`: {logX, logY, xRange (labels)};
// plotly-style {xaxis: {type: "log"}} is read too.
function newFigure(id, title, xTitle, yTitle, extra) {
  const el = document.getElementById(id);
  if (!el) return null;
  extra = extra || {};
  const logX = extra.logX || (extra.xaxis && extra.xaxis.type === "log");
  const logY = extra.logY || (extra.yaxis && extra.yaxis.type === "log");
  const options = {
    title: title,
    height: el.clientHeight || 300,
    sizing_mode: "stretch_width",
    x_axis_label: xTitle,
    y_axis_label: yTitle,
    tools: "pan,box_zoom,wheel_zoom,reset,save,hover",
    toolbar_location: "right",
  };
  if (logX) options.x_axis_type = "log";
  if (logY) options.y_axis_type = "log";
  if (extra.xRange) options.x_range = extra.xRange;
  return { el: el, figure: Bokeh.Plotting.figure(options) };
}

// Draw it; the container gets the class "chart-drawn" once the chart is on the page.
function showFigure(made) {
  made.el.textContent = "";
  Bokeh.Plotting.show(made.figure, made.el)
    .then(() => made.el.classList.add("chart-drawn"))
    .catch((error) => console.error("chart " + made.el.id + ": " + error));
}

// Bars at x (numbers: bars span half-way to their neighbours; strings: one bar each).
function barChart(id, x, y, title, xTitle, yTitle, extra) {
  const categorical = x.length > 0 && typeof x[0] === "string";
  const made = newFigure(id, title, xTitle, yTitle,
    Object.assign({}, extra, categorical ? { xRange: x } : {}));
  if (!made) return;
  let width = 0.8;
  if (!categorical && x.length > 1) {
    width = Math.min(...x.slice(1).map((v, i) => v - x[i])) * 0.9;
  }
  made.figure.vbar({ x: x, top: y, width: width, fill_color: PALETTE[0], line_color: "white" });
  showFigure(made);
}

// A histogram over explicit bin edges (so log-spaced bins draw true to scale).
function histogramChart(id, edges, counts, title, xTitle, yTitle, extra) {
  const made = newFigure(id, title, xTitle, yTitle, extra);
  if (!made) return;
  made.figure.quad({
    left: edges.slice(0, -1), right: edges.slice(1), top: counts, bottom: 0,
    fill_color: PALETTE[0], line_color: "white",
  });
  showFigure(made);
}

// Several series over a shared x: [{name, x, y, type?: "bar" | "line"}]; strings on x
// make a categorical axis.
function seriesChart(id, series, title, xTitle, yTitle, extra) {
  const first = series.length ? series[0].x : [];
  const categorical = first.length > 0 && typeof first[0] === "string";
  const labels = categorical ? [...new Set(series.flatMap((s) => s.x))] : null;
  const made = newFigure(id, title, xTitle, yTitle,
    Object.assign({}, extra, categorical ? { xRange: labels } : {}));
  if (!made) return;
  series.forEach((s, k) => {
    const color = PALETTE[k % PALETTE.length];
    const label = s.name || "series " + (k + 1);
    if (s.type === "bar") {
      made.figure.vbar({ x: s.x, top: s.y, width: 0.8 / series.length, fill_color: color,
        fill_alpha: 0.7, line_color: color, legend_label: label });
    } else {
      made.figure.line({ x: s.x, y: s.y, line_color: color, line_width: 2, legend_label: label });
      made.figure.scatter({ x: s.x, y: s.y, fill_color: color, line_color: color, size: 6,
        legend_label: label });
    }
  });
  // The legend may sit on the data: see through it, and click a series to hide it.
  const legend = made.figure.legend;
  legend.background_fill_alpha = 0.5;
  legend.border_line_alpha = 0.3;
  legend.click_policy = "hide";
  showFigure(made);
}

// One context: tokens shaded by activation / scale (orange), the example token outlined.
function contextLine(example, scale) {
  const line = document.createElement("div");
  line.className = "context";
  const act = document.createElement("span");
  act.className = "act";
  act.textContent = example.act === null ? "" : example.act.toPrecision(3);
  line.appendChild(act);
  example.tokens.forEach((text, i) => {
    const span = document.createElement("span");
    const value = example.acts[i] || 0;
    const alpha = scale > 0 ? Math.min(1, value / scale) : 0;
    span.className = i === example.index ? "tok own" : "tok";
    span.textContent = text;
    if (alpha > 0) span.style.background = "rgba(255, 140, 0, " + alpha.toFixed(2) + ")";
    span.title = "activation " + value.toPrecision(3);
    line.appendChild(span);
  });
  line.title = "document " + example.doc + ", position " + example.pos;
  return line;
}

function renderContexts(id, examples, scale) {
  const box = document.getElementById(id);
  if (!box) return;
  examples.forEach((e) => box.appendChild(contextLine(e, scale)));
}

// The jump box: go to latents/<id>.html when the id exists, else say why not.
function jumpTo(form, prefix, numLatents) {
  const raw = form.elements["latent"].value.trim();
  const id = Number(raw);
  const note = form.querySelector(".jump-note");
  if (!/^\d+$/.test(raw) || id >= numLatents) {
    note.textContent = " no latent " + raw + " (0 to " + (numLatents - 1) + ")";
    return false;
  }
  window.location.href = prefix + id + ".html";
  return false;
}
