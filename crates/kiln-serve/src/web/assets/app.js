// kiln's web monitor: progressive enhancement. Every page works without
// this script; with it, job pages follow the job's SSE stream and the
// dashboard refreshes itself.
(function () {
  "use strict";

  var ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  function esc(s) { return s.replace(/[&<>"']/g, function (c) { return ESC[c]; }); }

  // ANSI SGR colours as spans, like the server's `ansi_html`.
  function ansi(text) {
    var out = "", open = false;
    var parts = text.split(/\x1b\[([0-9;]*)([A-Za-z])/);
    for (var i = 0; i < parts.length; i += 3) {
      out += esc(parts[i].replace(/\x1b/g, ""));
      if (i + 2 >= parts.length || parts[i + 2] !== "m") continue;
      if (open) { out += "</span>"; open = false; }
      var classes = [];
      parts[i + 1].split(";").forEach(function (p) {
        var n = parseInt(p, 10);
        if (n === 1) classes.push("ansi-bold");
        else if (n >= 30 && n <= 37) classes.push("ansi-fg" + (n - 30));
        else if (n >= 90 && n <= 97) classes.push("ansi-fg" + (n - 90 + 8));
      });
      if (classes.length) { out += '<span class="' + classes.join(" ") + '">'; open = true; }
    }
    return open ? out + "</span>" : out;
  }

  // Replaces the graph and the timeline with the server's current ones
  // (one request, one read of the job's events).
  function refreshParts(job) {
    fetch("/jobs/" + job + "/live", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null) return;
        var fresh = new DOMParser().parseFromString(html, "text/html");
        ["graph", "timeline"].forEach(function (id) {
          var el = document.getElementById(id), part = fresh.getElementById(id);
          if (el && part) el.innerHTML = part.innerHTML;
        });
      })
      .catch(function () {});
  }

  // Calls `f` at most once per `ms`, and once more after the last call.
  function throttle(f, ms) {
    var timer = null, again = false;
    return function () {
      if (timer) { again = true; return; }
      f();
      timer = setTimeout(function () { timer = null; if (again) { again = false; f(); } }, ms);
    };
  }

  function followJob(log) {
    var job = log.getAttribute("data-job");
    var last = parseInt(log.getAttribute("data-last"), 10) || 0;
    var status = document.getElementById("live");
    var filter = document.getElementById("log-filter");
    var button = document.getElementById("filter-button");

    function shown(line) { return !filter || !filter.value || line.getAttribute("data-variant") === filter.value; }
    if (filter) {
      if (button) button.hidden = true;
      filter.addEventListener("change", function () {
        Array.prototype.forEach.call(log.children, function (l) { l.hidden = !shown(l); });
        var url = new URL(location.href);
        if (filter.value) url.searchParams.set("variant", filter.value); else url.searchParams.delete("variant");
        history.replaceState(null, "", url);
      });
    }
    if (log.getAttribute("data-active") !== "true") return;

    function setStatus(state, text) {
      if (!status) return;
      status.setAttribute("data-state", state);
      status.textContent = text;
    }
    // Auto-scroll while the reader is at the bottom; stop when they scroll up.
    var stick = true;
    log.addEventListener("scroll", function () {
      stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 24;
    });
    log.scrollTop = log.scrollHeight;
    var redraw = throttle(function () { refreshParts(job); }, 700);
    var ticker = setInterval(redraw, 5000);

    // Events up to `last` are on the page; the browser sends
    // Last-Event-ID when it reconnects, and ids at or below `last` are
    // dropped, so no line shows twice.
    var source = new EventSource("/api/jobs/" + job + "/events?after=" + last);
    setStatus("connecting", "Connecting…");
    source.onopen = function () { setStatus("live", "Live"); };
    source.onerror = function () {
      if (source.readyState === EventSource.CONNECTING) setStatus("reconnecting", "Reconnecting…");
      else setStatus("lost", "Connection lost; reload the page.");
    };
    source.onmessage = function (m) {
      var n = parseInt(m.lastEventId, 10);
      if (!(n > last)) return;
      last = n;
      log.setAttribute("data-last", String(n));
      setStatus("live", "Live");
      var e;
      try { e = JSON.parse(m.data); } catch (_) { return; }
      if (typeof e.line === "string") {
        var div = document.createElement("div");
        div.className = "line";
        div.setAttribute("data-id", String(n));
        div.setAttribute("data-variant", e.variant || "");
        div.innerHTML = ansi(e.line);
        div.hidden = !shown(div);
        log.appendChild(div);
        if (stick) log.scrollTop = log.scrollHeight;
      }
      if (e.event === "plan_resolved" && filter) {
        (e.variants || []).forEach(function (v) {
          if (!filter.querySelector('option[value="' + CSS.escape(v.name) + '"]')) {
            var o = document.createElement("option");
            o.value = v.name; o.textContent = v.name;
            filter.appendChild(o);
          }
        });
      }
      if (/^(plan_resolved|variant_|step_|build_finished)/.test(e.event || "")) redraw();
    };
    source.addEventListener("end", function () {
      source.close();
      clearInterval(ticker);
      setStatus("ended", "The job has ended; reloading…");
      setTimeout(function () { location.reload(); }, 600);
    });
  }

  function refreshPage(box) {
    var every = parseInt(box.getAttribute("data-refresh"), 10) || 3000;
    setInterval(function () {
      if (document.hidden) return;
      fetch(location.href, { credentials: "same-origin", cache: "no-store" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (html === null) return;
          var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("[data-refresh]");
          if (fresh) box.innerHTML = fresh.innerHTML;
        })
        .catch(function () {});
    }, every);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var log = document.getElementById("log");
    if (log) followJob(log);
    var box = document.querySelector("[data-refresh]");
    if (box) refreshPage(box);
  });
})();
