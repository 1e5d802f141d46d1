// Keep the run page current: poll the run's progress JSON every 2 seconds while it is active, redraw
// the bar, numbers, status and timeline, put in place a new copy of the sample gallery or the loss chart
// (drawn by the server) when the JSON says that part changed, and reload once the run ends so the server
// draws the download link or the retry button (and once more when a completed run's checkpoints have been
// compared by likeness, which may choose another LoRA). Without JavaScript the page is still correct, only not live.
(function () {
  "use strict";
  var card = document.getElementById("run");
  if (!card || card.dataset.final === "true" || !window.fetch) return;

  var INTERVAL_MS = 2000;
  // While samples are on their way (the JSON's `watch.soon`), a poll a second: a sample shows about a
  // second after it is stored instead of two, which keeps "trainer wrote it -> on the page" under 5 s.
  var SOON_INTERVAL_MS = 1000;
  var url = card.dataset.progressUrl;
  var failures = 0;

  function text(id, value) {
    var node = document.getElementById(id);
    if (node && node.textContent !== String(value)) node.textContent = value;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    if (seconds < 60) return seconds + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min " + (seconds % 60) + " s";
    return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
  }

  // The same text the server writes ("7 Dec, 14:03:07 UTC"), so a redrawn timeline does not change format.
  var MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  function pad(number) {
    return (number < 10 ? "0" : "") + number;
  }
  function utc(iso) {
    var at = new Date(iso);
    return at.getUTCDate() + " " + MONTHS[at.getUTCMonth()] + ", " + pad(at.getUTCHours()) + ":" +
      pad(at.getUTCMinutes()) + ":" + pad(at.getUTCSeconds()) + " UTC";
  }

  function timeline(events) {
    var list = document.getElementById("run-timeline");
    if (!list || list.children.length === events.length) return;
    list.textContent = "";
    events.forEach(function (event) {
      var item = document.createElement("li");
      var time = document.createElement("time");
      time.dateTime = event.at;
      time.textContent = utc(event.at);
      var status = document.createElement("span");
      status.className = "status status-" + event.to;
      status.textContent = event.to_display;
      var source = document.createElement("span");
      source.className = "meta";
      source.textContent = "by " + event.source;
      item.append(time, " ", status, " ", source);
      list.appendChild(item);
    });
  }

  function draw(run) {
    var bar = document.getElementById("run-progress");
    if (bar) {
      bar.value = run.percent;
      bar.textContent = run.percent + "%";
    }
    var status = document.getElementById("run-status");
    if (status) status.className = "status status-" + run.status;
    text("run-status", run.status_display);
    text("run-step", run.step);
    text("run-total", run.total_steps);
    text("run-percent", run.percent);
    text("run-eta", run.is_final ? "—" : duration(run.eta_seconds));
    text("run-loss", run.loss === null ? "—" : run.loss.toFixed(4));
    var notice = document.getElementById("run-notice");
    if (notice) {
      text("run-notice", run.notice || "");
      notice.hidden = !run.notice;
    }
    if (run.error) {
      text("run-error-message", run.error.message);
      document.getElementById("run-error").hidden = false;
    }
    timeline(run.events);
    card.dataset.status = run.status;
  }

  // The gallery and the chart: each section names the URL of its part; the part's root element carries
  // the version it was drawn at. Only a part whose version changed is fetched, one fetch at a time.
  // A new sample is fetched at the next poll; the chart, which changes with every progress report, at
  // most every 6 seconds (a line that moves every few seconds reads as live, and costs a third as much).
  var MIN_INTERVAL_MS = { "loss-chart": 6000 };
  var fetching = {};
  var fetchedAt = {};
  function refreshPart(sectionId, rootId, version) {
    var section = document.getElementById(sectionId);
    var root = document.getElementById(rootId);
    if (!section || !root || !version || root.dataset.version === version || fetching[rootId]) return;
    if (Date.now() - (fetchedAt[rootId] || 0) < (MIN_INTERVAL_MS[rootId] || 0)) return;
    fetching[rootId] = true;
    fetchedAt[rootId] = Date.now();
    fetch(section.dataset.partUrl, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(rootId);
        var current = document.getElementById(rootId);
        if (fresh && current) replaceKeepingPlace(current, fresh);
      })
      .catch(function () {
        // Tried again at the next poll: the version still differs.
      })
      .then(function () {
        fetching[rootId] = false;
      });
  }

  // Swap a part for its new copy without losing the reader's place: the gallery's sideways scroll and the
  // focused thumbnail or button stay where they were.
  function replaceKeepingPlace(current, fresh) {
    var scroller = current.querySelector(".gallery-scroll");
    var scrollLeft = scroller ? scroller.scrollLeft : 0;
    var focused = current.contains(document.activeElement) ? document.activeElement.id : "";
    current.replaceWith(fresh);
    var newScroller = fresh.querySelector(".gallery-scroll");
    if (newScroller) newScroller.scrollLeft = scrollLeft;
    var again = focused && document.getElementById(focused);
    if (again) again.focus({ preventScroll: true });
  }

  function watch(versions) {
    if (!versions || !window.DOMParser) return;
    refreshPart("samples", "gallery", versions.gallery);
    refreshPart("loss", "loss-chart", versions.chart);
  }

  function poll() {
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (run) {
        failures = 0;
        draw(run);
        watch(run.watch);
        if (run.is_final && (run.status !== card.dataset.status || !run.comparing)) {
          // The server draws what a finished run offers: the LoRA link with its hash, or Retry; and again
          // once a completed run's checkpoints are compared, with the one chosen by likeness.
          window.location.reload();
          return;
        }
        window.setTimeout(poll, run.watch && run.watch.soon ? SOON_INTERVAL_MS : INTERVAL_MS);
      })
      .catch(function () {
        // A restart or a dropped connection: keep trying, a little more slowly each time.
        failures += 1;
        window.setTimeout(poll, INTERVAL_MS * Math.min(failures + 1, 15));
      });
  }

  window.setTimeout(poll, INTERVAL_MS);
})();
