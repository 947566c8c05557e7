// fleetpulse pages: the only script. Three jobs, each where a page must change without a
// reload: SLA countdowns tick; the dispatch queue follows the order stream (Server-Sent
// Events, resumed by the browser with Last-Event-ID) and refreshes its table; sections
// marked data-poll refresh themselves. Every page works without it.
"use strict";
(function () {
  function span(secs) {
    var a = Math.abs(secs), d = Math.floor(a / 86400), h = Math.floor(a % 86400 / 3600), m = Math.floor(a % 3600 / 60);
    var s = d > 0 ? (h > 0 ? d + " d " + h + " h" : d + " d") : h > 0 ? h + " h " + m + " min" : m > 0 ? m + " min" : Math.floor(a) + " s";
    return secs >= 0 ? "in " + s : s + " ago";
  }
  // the server's clock may be simulated (the demo): count from its own "now"
  var serverNow = Date.parse(document.documentElement.getAttribute("data-now") || "") || Date.now();
  var speed = parseFloat(document.documentElement.getAttribute("data-speed") || "1") || 1;
  var loaded = Date.now();
  function now() { return serverNow + (Date.now() - loaded) * speed; }
  function tick() {
    var els = document.querySelectorAll("time[data-deadline]");
    for (var i = 0; i < els.length; i++) {
      var t = Date.parse(els[i].getAttribute("data-deadline"));
      if (!isNaN(t)) { els[i].textContent = span((t - now()) / 1000); }
    }
  }
  setInterval(tick, 1000);

  function refresh(url, target) {
    return fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.text(); })
      .then(function (html) { var el = document.getElementById(target); if (el) { el.innerHTML = html; tick(); } });
  }

  var live = document.querySelector(".live[data-stream]");
  if (live && window.EventSource) {
    var state = live.querySelector(".live-state");
    var changes = live.querySelector(".changes");
    var pending = null;
    var es = new EventSource(live.getAttribute("data-stream"));
    es.onopen = function () { state.textContent = "live updates: on"; state.className = "live-state on"; };
    es.onerror = function () { state.textContent = "live updates: reconnecting…"; state.className = "live-state"; };
    var kinds = ["created", "escalated", "updated", "task_added", "acknowledged", "assigned", "started", "completed", "cancelled", "sla_breached", "condition_cleared", "condition_returned"];
    kinds.forEach(function (k) {
      es.addEventListener("order." + k, function (ev) {
        var d = {};
        try { d = JSON.parse(ev.data); } catch (e) { return; }
        var o = d.order || {}, e2 = d.event || {};
        var li = document.createElement("li");
        li.setAttribute("data-order", String(o.id || e2.order_id));
        li.textContent = "#" + (o.id || e2.order_id) + " " + k.replace("_", " ") + (o.serial ? " · " + o.serial : "");
        changes.insertBefore(li, changes.firstChild);
        while (changes.children.length > 8) { changes.removeChild(changes.lastChild); }
        // one table refresh for a burst of events
        if (pending) { clearTimeout(pending); }
        pending = setTimeout(function () {
          pending = null;
          refresh(live.getAttribute("data-refresh"), live.getAttribute("data-target")).then(function () {
            var row = document.querySelector('#' + live.getAttribute("data-target") + ' a[href="/dispatch/orders/' + (o.id || e2.order_id) + '"]');
            if (row) { row.closest("tr").className = "fresh"; }
          }).catch(function () {});
        }, 250);
      });
    });
  }

  var polls = document.querySelectorAll("[data-poll]");
  for (var i = 0; i < polls.length; i++) {
    (function (el) {
      var every = parseInt(el.getAttribute("data-every") || "5000", 10);
      setInterval(function () { if (!document.hidden) { refresh(el.getAttribute("data-poll"), el.id).catch(function () {}); } }, every);
    })(polls[i]);
  }
})();
