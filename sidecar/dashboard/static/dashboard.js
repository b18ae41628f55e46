// The dashboard's one script (no inline script: CSP default-src 'self'). Three small jobs:
// the activity table's live mode, the copy button of a key shown once, and taking a page that
// showed a key off the history so a reload cannot show it again. Values are only ever set as
// textContent, never parsed as HTML.
"use strict";

(function () {
  function liveTable() {
    var table = document.getElementById("events");
    var box = document.getElementById("live");
    var status = document.getElementById("live-status");
    if (!table || !box) { return; }
    var feed = table.getAttribute("data-feed");
    var busy = false;
    function fill(rows) {
      var body = table.tBodies[0];
      var fresh = document.createElement("tbody");
      var keys = ["ts", "event", "key", "client_ip", "request", "reason"];
      rows.forEach(function (row) {
        var tr = document.createElement("tr");
        keys.forEach(function (k) {
          var td = document.createElement("td");
          if (k === "event") {
            var tag = document.createElement("span");
            tag.className = "tag";
            tag.textContent = row[k];
            td.appendChild(tag);
          } else {
            td.textContent = row[k];
          }
          tr.appendChild(td);
        });
        fresh.appendChild(tr);
      });
      if (!rows.length) {
        var empty = document.createElement("tr");
        var td = document.createElement("td");
        td.colSpan = 6;
        td.textContent = "No events match.";
        empty.appendChild(td);
        fresh.appendChild(empty);
      }
      table.replaceChild(fresh, body);
    }
    function poll() {
      if (!box.checked || busy) { return; }
      busy = true;
      fetch(feed, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) {
          if (r.redirected || !r.ok) { throw new Error("HTTP " + r.status); }
          return r.json();
        })
        .then(function (data) {
          fill(data.rows);
          status.textContent = "Live: updated " + new Date().toLocaleTimeString();
        })
        .catch(function (e) { status.textContent = "Live mode paused: " + e.message; })
        .then(function () { busy = false; });
    }
    box.addEventListener("change", function () {
      status.textContent = box.checked ? "Live: on" : "";
      poll();
    });
    window.setInterval(poll, 1000);
    poll();
  }

  function copyButtons() {
    document.querySelectorAll("button[data-copy]").forEach(function (button) {
      button.hidden = false;
      button.addEventListener("click", function () {
        var source = document.getElementById(button.getAttribute("data-copy"));
        var note = document.getElementById(button.getAttribute("data-note"));
        navigator.clipboard.writeText(source.value || source.textContent).then(
          function () { if (note) { note.textContent = "Copied."; } },
          function () { source.select(); if (note) { note.textContent = "Select and copy it."; } }
        );
      });
    });
  }

  function forgetShownOnce() {
    var target = document.body.getAttribute("data-replace-url");
    if (target) { window.history.replaceState(null, "", target); }
  }

  document.addEventListener("DOMContentLoaded", function () {
    forgetShownOnce();
    liveTable();
    copyButtons();
  });
})();
