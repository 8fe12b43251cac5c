// The customer's page: its offers list stays current by itself.
//
// The socket (/ws/me/offers/) only tells; the server's list is the truth. On every
// frame about an offer, and after every (re)connect, the page re-reads the list
// (/me/offers/) and swaps it in, so it always equals a fresh load. A list being
// used (focus inside it) is re-read once focus leaves, never under the customer's
// hand. The socket reconnects by itself, backing off up to 30 s.
(function () {
  "use strict";

  var section = document.getElementById("offers");
  var state = document.getElementById("live-state");
  if (!section || !window.WebSocket) return;
  var url = section.dataset.offersUrl;
  var socket = null, attempt = 0, pending = false, reading = false;
  var LABELS = { live: "Live: new offers appear by themselves", connecting: "Connecting…",
                 reconnecting: "Reconnecting…", gone: "Signed out: reload the page" };

  function show(name) {
    if (!state) return;
    state.dataset.state = name;
    state.querySelector(".live-text").textContent = LABELS[name] || name;
    state.hidden = false;
  }

  function list() { return document.getElementById("my-offers"); }

  function busy() {
    var current = list();
    return current && current.contains(document.activeElement) && document.activeElement !== document.body;
  }

  function reread() {
    if (reading || busy()) { pending = true; return; }
    pending = false;
    reading = true;
    var known = {};
    Array.prototype.forEach.call(section.querySelectorAll("[data-offer]"), function (el) { known[el.dataset.offer] = true; });
    fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (response) {
        if (response.status === 401 || response.status === 403 || response.redirected) {
          window.location.reload();  // signed out elsewhere: let the page say so
          return null;
        }
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        if (html === null) return;
        var old = list();
        var holder = document.createElement("div");
        holder.innerHTML = html;
        var fresh = holder.firstElementChild;
        // Notices belong to the answer that made them, not to later re-reads.
        if (!fresh.querySelector(".alert")) {
          Array.prototype.slice.call(old.querySelectorAll(".alert")).reverse().forEach(function (n) {
            fresh.insertBefore(n, fresh.firstChild);
          });
        }
        Array.prototype.forEach.call(fresh.querySelectorAll("[data-offer]"), function (el) {
          if (!known[el.dataset.offer]) el.classList.add("offer-new");
        });
        old.replaceWith(fresh);
      })
      .catch(function () { pending = true; })
      .then(function () {
        reading = false;
        if (pending && !busy()) reread();
      });
  }

  section.addEventListener("focusout", function () {
    setTimeout(function () { if (pending && !busy()) reread(); }, 0);
  });

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + window.location.host + "/ws/me/offers/");
    show(attempt ? "reconnecting" : "connecting");
    var first = true;
    socket.onmessage = function (message) {
      var frame;
      try { frame = JSON.parse(message.data); } catch (e) { return; }
      if (first) {
        first = false;
        attempt = 0;
        show("live");
        reread();  // what changed while the socket was down (or since the page was served)
        return;
      }
      if (frame.event === "offer.presented" || frame.event === "offer.responded") reread();
    };
    socket.onclose = function (event) {
      socket = null;
      if (event.code === 4403) { show("gone"); return; }  // not a customer's log-in any more
      show("reconnecting");
      attempt += 1;
      var delay = Math.min(30000, 500 * Math.pow(2, attempt)) * (0.75 + Math.random() / 2);
      setTimeout(connect, delay);
    };
  }

  connect();
})();
