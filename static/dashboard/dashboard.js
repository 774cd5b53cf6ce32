// Progressive enhancement only: every page reads fine without this file.
(function () {
  "use strict";

  // Copy buttons: <button data-copy="#element-id">.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source) return;
    var text = source.textContent.trim();
    var done = function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = "Copy"; }, 2000);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done);
    } else {
      // Plain-http sites have no clipboard API: select the text for Ctrl+C.
      var range = document.createRange();
      range.selectNodeContents(source);
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      try { document.execCommand("copy"); done(); } catch (e) { /* selected, at least */ }
    }
  });

  var palette = ["#3559e0", "#2fb59a", "#f0a04f", "#c2497a", "#7a5cd6", "#4aa3df",
                 "#8a9a2b", "#d9582b", "#5d6b82", "#b5891f"];

  // Charts: <canvas data-chart="id-of-json-script" data-series="key" data-kind="bar|line">.
  function drawCharts(root) {
    if (typeof Chart === "undefined") return;
    root.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var source = document.getElementById(canvas.getAttribute("data-chart"));
      if (!source) return;
      var data = JSON.parse(source.textContent);
      var series = data[canvas.getAttribute("data-series")] || [];
      var money = canvas.getAttribute("data-money") === "1";
      var kind = canvas.getAttribute("data-kind") || "bar";
      // Bars stack (a total per period); lines overlay (a trend per series).
      var stacked = kind === "bar";
      var existing = Chart.getChart(canvas);
      if (existing) existing.destroy();
      new Chart(canvas, {
        type: kind,
        data: {
          labels: data.labels,
          datasets: series.map(function (s, i) {
            return {
              label: s.label, data: s.data, borderWidth: 2, tension: 0.25,
              backgroundColor: palette[i % palette.length],
              borderColor: palette[i % palette.length], pointRadius: 0,
              borderRadius: 3
            };
          })
        },
        options: {
          responsive: true, maintainAspectRatio: false, animation: false,
          interaction: { mode: "index", intersect: false },
          plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
          scales: {
            x: { stacked: stacked, grid: { display: false } },
            y: {
              stacked: stacked, beginAtZero: true,
              ticks: { callback: function (v) { return money ? "$" + v : v.toLocaleString(); } }
            }
          }
        }
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawCharts(document);
    // Content swapped in later (filters, polling) brings its own canvases.
    if (window.htmx) htmx.onLoad(drawCharts);
  });
})();
