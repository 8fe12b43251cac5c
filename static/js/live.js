// The live customer screen: one WebSocket to the desktop consumer, watching the
// customer on screen. A frame only says that something changed; the page then
// re-reads the screen from the server (rows are the truth), so a missed frame
// can never leave it wrong. After a dropped connection it reconnects by itself
// (backing off up to 30 s) and re-reads once it watches again, which makes the
// page after a reconnect the same as a fresh load.
(function () {
  "use strict";

  var screen = document.getElementById("screen");
  if (!screen || !screen.dataset.liveCustomer || !window.WebSocket) return;

  var customerId = parseInt(screen.dataset.liveCustomer, 10);
  var state = document.getElementById("live-state");
  var socket = null;
  var attempt = 0;
  var everWatched = false;
  var refreshTimer = null;
  var refreshing = false;
  var refreshAgain = false;

  function show(kind, text) {
    if (!state) return;
    state.dataset.state = kind;
    state.querySelector(".live-text").textContent = text;
    state.hidden = false;
  }

  function version() { return parseInt(screen.dataset.version || "0", 10); }

  function knownInteractions() {
    var ids = {};
    screen.querySelectorAll("tr[data-interaction]").forEach(function (row) { ids[row.dataset.interaction] = true; });
    return ids;
  }

  // Bursts (a batch of synced contacts) become one re-read, a quarter second after the last frame.
  function scheduleRefresh() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refresh, 250);
  }

  function refresh() {
    if (refreshing) { refreshAgain = true; return; }
    refreshing = true;
    var before = knownInteractions();
    fetch(screen.dataset.partUrl, { credentials: "same-origin", headers: { "X-Requested-With": "live" } })
      .then(function (response) {
        if (response.status === 404) { show("gone", "This customer is no longer available to you."); return null; }
        if (response.redirected || !response.ok) throw new Error("screen " + response.status);
        return response.text();
      })
      .then(function (html) {
        if (html === null) return;
        // Keep what the agent was doing: an open note stays open, focus stays put.
        var open = Array.from(screen.querySelectorAll("details[open]")).map(function (d) {
          var row = d.closest("tr[data-interaction]"); return row ? row.dataset.interaction : null;
        });
        var focusedId = document.activeElement && document.activeElement.id;
        screen.innerHTML = html;
        var marker = screen.querySelector("[data-screen-version]");
        if (marker) screen.dataset.version = marker.dataset.screenVersion;
        open.forEach(function (id) {
          var d = id && screen.querySelector('tr[data-interaction="' + id + '"] details');
          if (d) d.open = true;
        });
        if (focusedId) { var el = document.getElementById(focusedId); if (el) el.focus(); }
        screen.querySelectorAll("tr[data-interaction]").forEach(function (row) {
          if (!before[row.dataset.interaction]) row.classList.add("row-new");
        });
        if (window.htmx) window.htmx.process(screen);
      })
      .catch(function () { show("stale", "Could not refresh: retrying…"); setTimeout(scheduleRefresh, 3000); })
      .then(function () {
        refreshing = false;
        if (refreshAgain) { refreshAgain = false; scheduleRefresh(); }
      });
  }

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + window.location.host + "/ws/desktop/");
    socket.onopen = function () {
      socket.send(JSON.stringify({ action: "watch", customer_id: customerId }));
    };
    socket.onmessage = function (message) {
      var frame;
      try { frame = JSON.parse(message.data); } catch (e) { return; }
      if (frame.event === "watching" && frame.customer_id === customerId) {
        attempt = 0;
        show("live", "Live");
        // Anything that changed while the socket was down is in the rows: re-read them.
        if (everWatched) scheduleRefresh();
        everWatched = true;
        return;
      }
      if (frame.error) { show("gone", frame.error); return; }
      if (frame.customer_id !== customerId) return;
      if (frame.event === "customer.updated" && frame.version && frame.version <= version()) return;
      scheduleRefresh();
    };
    socket.onclose = function (event) {
      socket = null;
      if (event.code === 4403) { show("gone", "Signed out: sign in again to see live changes."); return; }
      attempt += 1;
      var delay = Math.min(30000, 1000 * Math.pow(2, attempt - 1)) * (0.75 + Math.random() / 2);
      show("reconnecting", "Reconnecting…");
      setTimeout(connect, delay);
    };
  }

  // A laptop waking up or a network coming back: try at once rather than wait out the back-off.
  window.addEventListener("online", function () { if (!socket) { attempt = 0; connect(); } });
  connect();
})();
