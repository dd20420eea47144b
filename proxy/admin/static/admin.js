// Live events: polls /api/events every second with the page's filters and prepends new rows.
// Confirmation for destructive forms. No framework; text is inserted with textContent only.
"use strict";
(function () {
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (e) {
      if (!window.confirm(form.dataset.confirm)) e.preventDefault();
    });
  });
  var table = document.getElementById("events");
  if (!table) return;
  var body = table.querySelector("tbody");
  var status = document.getElementById("live-status");
  var names = table.dataset.destinations ? table.dataset.destinations.split(",") : [];
  var params = new URLSearchParams(window.location.search);
  var after = 0;

  function cell(tr, text, cls) {
    var td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }
  function render(ev) {
    var tr = document.createElement("tr");
    tr.dataset.messageId = ev.messageId;
    cell(tr, new Date(ev.at * 1000).toLocaleTimeString());
    cell(tr, ev.source);
    cell(tr, ev.type);
    var link = document.createElement("a");
    link.href = "/events/" + ev.seq;
    link.textContent = ev.name || "(" + ev.type + ")";
    cell(tr, "").appendChild(link);
    cell(tr, ev.messageId);
    cell(tr, ev.userId || ev.anonymousId);
    names.forEach(function (n) {
      var s = ev.destinations[n] || "";
      cell(tr, s, "status status-" + s.split(":")[0]);
    });
    return tr;
  }
  function poll() {
    var q = new URLSearchParams(params);
    q.set("after", "0");
    fetch("/api/events?" + q.toString(), { credentials: "same-origin" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (data) {
        // Re-render every row still in the window: outcomes change after the event arrives.
        var fresh = document.createDocumentFragment();
        data.events.forEach(function (ev) { fresh.appendChild(render(ev)); });
        body.replaceChildren(fresh);
        after = data.latest;
        status.textContent = data.events.length + " recent events (updated " + new Date().toLocaleTimeString() + ")";
      })
      .catch(function (err) { status.textContent = "Live view paused: " + err.message; })
      .finally(function () { window.setTimeout(poll, 1000); });
  }
  poll();
})();
