// Draws the suite page's three charts from the JSON in #data. Plain DOM and
// SVG because the page opens from disk, offline: no libraries. Every data
// mark has class "mark" and data-case (the case id), which the tooltips and
// the tests read. Any error is shown in #error rather than leaving blank
// charts, and body[data-drawn="yes"] says drawing finished.
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7", "#9c755f"];
  const UNITS = [["GiB", 1073741824], ["MiB", 1048576], ["KiB", 1024]];

  function el(parent, tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    parent.appendChild(e);
    return e;
  }

  // A data mark; its tooltip is the case id and the figure.
  function mark(parent, tag, attrs, c, tip) {
    attrs["class"] = "mark " + attrs["class"];
    attrs["data-case"] = c.id;
    const e = el(parent, tag, attrs);
    el(e, "title", {}, c.id + "\n" + tip);
    return e;
  }

  function chart(id, width, height) {
    return el(document.getElementById(id), "svg", {
      "data-chart": id, width: width, height: height, viewBox: "0 0 " + width + " " + height, role: "img",
    });
  }

  // A sentence in place of a chart with nothing to draw: an empty box reads as a bug.
  function empty(id, sentence) {
    const p = document.createElement("p");
    p.className = "empty";
    p.textContent = sentence;
    document.getElementById(id).appendChild(p);
  }

  function legend(id, items) {
    const div = document.createElement("div");
    div.className = "legend";
    for (const [key, text, style] of items) {
      const item = document.createElement("span");
      const swatch = document.createElement("span");
      swatch.className = "key " + key;
      swatch.style.background = style;
      item.append(swatch, text);
      div.appendChild(item);
    }
    document.getElementById(id).appendChild(div);
  }

  const round = (v) => Math.round(v * 100) / 100;
  const num = (v) => String(+v.toPrecision(3));
  const ms = (v) => num(v) + " ms";
  function bytes(b) {
    for (const [unit, size] of UNITS) if (b >= size) return (b / size).toFixed(1) + " " + unit;
    return b + " B";
  }

  function niceStep(x) {
    if (!(x > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(x)));
    const r = x / p;
    return (r <= 1 ? 1 : r <= 2 ? 2 : r <= 5 ? 5 : 10) * p;
  }

  // Maps values onto [0, length]: linear from zero, or log10 when the largest
  // is more than `spread` times the smallest (on a linear axis a 2 ms case
  // beside a 2 s one is an invisible bar).
  function scale(values, length, spread = 100) {
    const min = Math.min(...values), max = Math.max(...values);
    const ticks = [];
    if (min > 0 && max / min > spread) {
      // Strictly below the smallest value, so its bar keeps some height.
      const lo = Math.floor(Math.log10(min) - 1e-9), hi = Math.ceil(Math.log10(max));
      for (let d = lo; d <= hi; d++) ticks.push(Math.pow(10, d));
      return { log: true, ticks: ticks, at: (v) => (length * (Math.log10(v) - lo)) / (hi - lo) };
    }
    const step = niceStep(max / 5);
    const top = Math.max(step, Math.ceil(max / step) * step);
    for (let i = 0; i * step <= top * (1 + 1e-9); i++) ticks.push(i * step);
    return { log: false, ticks: ticks, at: (v) => (length * v) / top };
  }

  function axisLabel(s, what) {
    return what + (s.log ? ", log scale)" : ")");
  }

  // Ticks and grid lines up the left side of a plot whose bottom is top + h.
  function yAxis(svg, s, left, top, h, right, label) {
    for (const t of s.ticks) {
      const y = round(top + h - s.at(t));
      el(svg, "line", { "class": "grid", x1: left, x2: right, y1: y, y2: y });
      el(svg, "text", { x: left - 6, y: y + 4, "text-anchor": "end" }, num(t));
    }
    el(svg, "line", { "class": "baseline", x1: left, x2: right, y1: top + h, y2: top + h });
    el(svg, "text", {
      "class": "axis-label", transform: "rotate(-90)", x: -(top + h / 2), y: 14, "text-anchor": "middle",
    }, label);
  }

  // Ticks and grid lines along the bottom of a plot, x from left.
  function xAxis(svg, s, left, top, bottom, label) {
    let end = left;
    for (const t of s.ticks) {
      const x = round(left + s.at(t));
      end = x;
      el(svg, "line", { "class": "grid", x1: x, x2: x, y1: top, y2: bottom });
      el(svg, "text", { x: x, y: bottom + 14, "text-anchor": "middle" }, num(t));
    }
    el(svg, "line", { "class": "baseline", x1: left, x2: left, y1: top, y2: bottom });
    el(svg, "text", { "class": "axis-label", x: (left + end) / 2, y: bottom + 32, "text-anchor": "middle" }, label);
  }

  function groupBy(items, key) {
    const groups = new Map();
    for (const it of items) {
      const k = key(it);
      if (!groups.has(k)) groups.set(k, []);
      groups.get(k).push(it);
    }
    return groups;
  }

  // Grouped bars: a group per model and compression, a bar per profile (and
  // per target, engine or workload when the suite has several of them).
  function latencyChart(cases) {
    const shown = cases.filter((c) => c.latency_ms !== null);
    if (!shown.length) return empty("latency", "No case measured a latency.");
    const varying = ["target", "engine", "workload"].filter((k) => new Set(shown.map((c) => c[k])).size > 1);
    const series = (c) => [c.profile].concat(varying.map((k) => c[k])).join(" · ");
    const names = [...new Set(shown.map(series))];
    const colour = (c) => PALETTE[names.indexOf(series(c)) % PALETTE.length];
    const values = shown.flatMap((c) => (c.predicted_ms === null ? [c.latency_ms] : [c.latency_ms, c.predicted_ms]));
    const H = 280, TOP = 12, LEFT = 64, SLOT = 28, BAR = 18;
    const s = scale(values, H);
    const groups = [];
    let x = LEFT + 16;
    for (const [name, members] of groupBy(shown, (c) => c.model + "/" + c.compression)) {
      const w = Math.max(members.length * SLOT, name.length * 6.5 + 8);
      groups.push({ name: name, members: members, x: x, w: w });
      x += w + 24;
    }
    const width = Math.max(x, 420);
    const svg = chart("latency", width, TOP + H + 32);
    yAxis(svg, s, LEFT, TOP, H, width - 8, axisLabel(s, "latency (ms"));
    const base = TOP + H;
    for (const g of groups) {
      let bx = g.x + (g.w - g.members.length * SLOT) / 2 + (SLOT - BAR) / 2;
      for (const c of g.members) {
        const y = round(base - s.at(c.latency_ms));
        const tip = "measured " + ms(c.latency_ms) + (c.predicted_ms === null ? "" : ", predicted " + ms(c.predicted_ms));
        mark(svg, "rect", {
          "class": "bar", "data-kind": "measured", x: round(bx), y: y, width: BAR, height: round(base - y), fill: colour(c),
        }, c, tip);
        if (c.predicted_ms !== null) {
          const py = round(base - s.at(c.predicted_ms));
          mark(svg, "line", {
            "class": "predicted", "data-kind": "predicted", x1: round(bx + BAR), x2: round(bx + BAR + 7), y1: py, y2: py,
          }, c, "predicted " + ms(c.predicted_ms));
        }
        bx += SLOT;
      }
      el(svg, "text", { x: round(g.x + g.w / 2), y: base + 18, "text-anchor": "middle" }, g.name);
    }
    const keys = names.map((n, i) => ["", n, PALETTE[i % PALETTE.length]]);
    legend("latency", keys.concat([["line", "predicted (roofline model)", "#222"]]));
  }

  // A row per case: the peak as a bar, the budget as a line across it.
  function ramChart(cases) {
    const shown = cases.filter((c) => c.peak !== null || c.budget !== null || c.status === "does_not_fit");
    if (!shown.length) return empty("ram", "No case measured its peak RAM or ran under a budget.");
    const ROW = 24, TOP = 8, W = 560;
    const left = Math.min(440, Math.max(...shown.map((c) => c.id.length)) * 6.4 + 12);
    const max = Math.max(1, ...shown.flatMap((c) => [c.peak || 0, c.budget || 0]));
    const [unit, size] = UNITS.find(([, sz]) => max >= sz) || UNITS[UNITS.length - 1];
    const s = scale([0, max / size], W);
    const bottom = TOP + shown.length * ROW;
    const svg = chart("ram", left + W + 100, bottom + 40);
    xAxis(svg, s, left, TOP, bottom, "peak RAM (" + unit + ")");
    const at = (b) => round(left + s.at(b / size));
    shown.forEach((c, i) => {
      const y = TOP + i * ROW;
      el(svg, "text", { x: left - 6, y: y + ROW / 2 + 4, "text-anchor": "end" }, c.id);
      let end = left;
      if (c.peak !== null) {
        const over = c.budget !== null && c.peak > c.budget;
        end = at(c.peak);
        mark(svg, "rect", {
          "class": over ? "peak over" : "peak", "data-kind": "peak", x: left, y: y + 5, width: round(end - left), height: ROW - 10,
        }, c, "peak " + bytes(c.peak) + (c.budget === null ? "" : " of " + bytes(c.budget)));
      }
      if (c.budget !== null) {
        const bx = at(c.budget);
        mark(svg, "line", { "class": "budget", "data-kind": "budget", x1: bx, x2: bx, y1: y + 1, y2: y + ROW - 1 }, c,
          "budget " + bytes(c.budget));
        end = Math.max(end, bx);
      }
      if (c.status === "does_not_fit") {
        el(svg, "text", { "class": "dnf", "data-case": c.id, x: end + 6, y: y + ROW / 2 + 4 }, "does not fit");
      }
    });
    legend("ram", [["", "peak within budget", PALETTE[0]], ["", "peak over budget", "#d62728"], ["line", "budget", "#111"]]);
  }

  // Emulated against real latency of the same case: one point per pair, on
  // one scale for both axes so y = x is the diagonal.
  function targetsChart(cases) {
    const emu = new Map(cases.filter((c) => c.target === "emu" && c.latency_ms !== null).map((c) => [c.pair, c]));
    const pairs = cases
      .filter((c) => c.target !== "emu" && c.latency_ms !== null && emu.has(c.pair))
      .map((real) => ({ real: real, emu: emu.get(real.pair) }));
    if (!pairs.length) {
      return empty("targets", "No case ran on both the emulated board and a real board, so there is nothing to compare.");
    }
    const S = 360, TOP = 12, LEFT = 64;
    // Points crowd a corner sooner than bars vanish: log from one decade.
    const s = scale(pairs.flatMap((p) => [p.emu.latency_ms, p.real.latency_ms]), S, 10);
    const svg = chart("targets", LEFT + S + 260, TOP + S + 44);
    yAxis(svg, s, LEFT, TOP, S, LEFT + S, axisLabel(s, "real board latency (ms"));
    xAxis(svg, s, LEFT, TOP, TOP + S, axisLabel(s, "emulated board latency (ms"));
    el(svg, "line", { "class": "identity", x1: LEFT, y1: TOP + S, x2: LEFT + S, y2: TOP });
    el(svg, "text", { x: LEFT + S - 4, y: TOP + 12, "text-anchor": "end" }, "y = x");
    for (const p of pairs) {
      const cx = round(LEFT + s.at(p.emu.latency_ms)), cy = round(TOP + S - s.at(p.real.latency_ms));
      const ratio = (p.real.latency_ms / p.emu.latency_ms).toFixed(2);
      mark(svg, "circle", { "class": "point", "data-kind": "pair", "data-emu-case": p.emu.id, cx: cx, cy: cy, r: 5 }, p.real,
        p.real.target + " " + ms(p.real.latency_ms) + ", emulated " + ms(p.emu.latency_ms) + " (× " + ratio + ")");
      const name = p.real.model + "/" + p.real.compression + " " + p.real.profile + " on " + p.real.target;
      el(svg, "text", { x: cx + 8, y: cy + 4 }, name);
    }
  }

  try {
    const data = JSON.parse(document.getElementById("data").textContent);
    latencyChart(data.cases);
    ramChart(data.cases);
    targetsChart(data.cases);
    document.body.dataset.drawn = "yes";
  } catch (e) {
    document.getElementById("error").textContent = "The charts could not be drawn: " + ((e && e.stack) || e);
  }
})();
