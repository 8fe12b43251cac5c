// The desk's one WebSocket (/ws/desktop/), on every staff page.
//
// - Presence: the socket's first frame is the agent's state and call (a snapshot);
//   later frames say what changed. The top bar and the call bar show them, with
//   timers, and the keys a / b / o, Enter, h, x and w work them.
// - Screen pop: a call offered to this agent opens the caller's record (or the
//   pick list, or the number to search) before the agent says hello.
// - The customer screen: the page watches its customer; a frame saying the record
//   changed makes it re-read the screen from the server (rows are the truth), and
//   so does every reconnect, so the page always equals a fresh load.
// The socket reconnects by itself, backing off up to 30 s; a heartbeat every 20 s
// tells the server the desk is still open.
(function () {
  "use strict";

  var presence = document.getElementById("presence");
  if (!presence || !window.WebSocket) return;

  var screen = document.getElementById("screen");
  var floor = document.getElementById("floor");
  var userId = parseInt(presence.dataset.userId || "0", 10);
  var customerId = screen && screen.dataset.liveCustomer ? parseInt(screen.dataset.liveCustomer, 10) : null;
  var liveState = document.getElementById("live-state");
  var callbar = document.getElementById("callbar");
  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  var socket = null, attempt = 0, everConnected = false, heartbeat = null;
  var current = { state: "unknown", since: null, reason: "", call: null };
  var refreshTimer = null, refreshing = false, refreshAgain = false;
  // This page load's id: its re-reads are access-logged once a minute, not on each one.
  var screenId = Math.random().toString(36).slice(2) + Date.now().toString(36);

  var LABELS = {
    offline: "Offline", available: "Available", ringing: "Ringing", on_call: "On a call",
    wrap_up: "Wrap-up", "break": "On a break", unknown: "Connecting…",
  };
  var CALL_LABELS = { ringing: "Incoming call", connected: "On call", held: "On hold", ended: "Call ended", queued: "Waiting" };

  function typing(el) {
    if (!el) return false;
    var tag = el.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || el.isContentEditable;
  }

  function showLive(kind, text) {
    if (!liveState) return;
    liveState.dataset.state = kind;
    liveState.querySelector(".live-text").textContent = text;
    liveState.hidden = false;
  }

  function clock(since) {
    if (!since) return "";
    var seconds = Math.max(0, Math.floor((Date.now() - new Date(since).getTime()) / 1000));
    var h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    var mm = (h ? String(m).padStart(2, "0") : String(m)) + ":" + String(s).padStart(2, "0");
    return h ? h + ":" + mm : mm;
  }

  // --- Presence and the call bar ------------------------------------------------------

  function render() {
    presence.dataset.state = current.state;
    var label = LABELS[current.state] || current.state;
    if (current.state === "break" && current.reason) label += " (" + current.reason.replace("_", " ") + ")";
    presence.querySelector(".presence-label").textContent = label;
    var busy = current.state === "ringing" || current.state === "on_call" || current.state === "wrap_up";
    presence.querySelector("[data-break-reason]").disabled = busy;
    presence.querySelectorAll("[data-set-state]").forEach(function (button) {
      button.disabled = busy;
      button.setAttribute("aria-pressed", String(button.dataset.setState === current.state));
    });
    renderCall();
    tick();
  }

  function renderCall() {
    if (!callbar) return;
    var call = current.call;
    var wrap = current.state === "wrap_up";
    if (!call && !wrap) { callbar.hidden = true; return; }
    callbar.hidden = false;
    var state = call ? call.state : "ended";
    callbar.dataset.state = state;
    callbar.querySelector(".callbar-state").textContent = wrap ? "Wrap-up" : (CALL_LABELS[state] || state);
    callbar.querySelector(".callbar-who").textContent = call
      ? (call.caller_number || "Withheld number") + (call.queue_name ? " · " + call.queue_name : "") : "";
    var show = {
      answer: state === "ringing", hold: state === "connected", resume: state === "held",
      hangup: state === "connected" || state === "held", wrap: wrap,
      transfer: state === "connected" || state === "held",
    };
    if (!show.transfer) closeTransfer();
    callbar.querySelectorAll(".callbar-actions [data-call]").forEach(function (button) {
      button.hidden = !show[button.dataset.call];
    });
    var form = document.getElementById("wrap-up");
    if (!form) return;
    var wasHidden = form.hidden;
    form.hidden = !wrap;
    if (wrap && wasHidden) {
      var select = form.querySelector("select");
      select.innerHTML = "";
      (current.dispositions || []).forEach(function (d) {
        var option = document.createElement("option");
        option.value = d.code; option.textContent = d.label;
        select.appendChild(option);
      });
      form.reset();
    }
  }

  function tick() {
    presence.querySelector(".presence-timer").textContent = clock(current.since);
    if (callbar && !callbar.hidden) {
      var call = current.call;
      var from = call && (call.answered_at || call.ring_started_at);
      var text = clock(from);
      if (current.state === "wrap_up" && current.since) {
        // After-call work counts down to the queue's limit, when it ends by itself.
        var limit = (call && call.wrap_up_seconds) || 0;
        var used = Math.floor((Date.now() - new Date(current.since).getTime()) / 1000);
        text = limit ? clock(new Date(Date.now() - Math.max(0, limit - used) * 1000).toISOString()) + " left" : clock(current.since);
      }
      callbar.querySelector(".callbar-timer").textContent = text;
    }
  }
  setInterval(tick, 1000);

  function apply(snapshot) {
    var before = current.call;
    current = {
      state: snapshot.state, since: snapshot.since, reason: snapshot.reason || "", call: snapshot.call || null,
      dispositions: snapshot.dispositions || current.dispositions || [],
    };
    render();
    return before;
  }

  // Resolves to true once the server took the request, false when it refused it (the
  // refusal is then shown in the call bar).
  function post(url, body) {
    var error = callbar && callbar.querySelector(".callbar-error");
    if (error) error.textContent = "";
    return fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "X-CSRFToken": csrf, "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams(body || {}).toString(),
    }).then(function (response) {
      return response.json().then(function (data) {
        if (!response.ok) throw new Error(data.error || "The request failed (" + response.status + ").");
        apply(data);
        return true;
      });
    }).catch(function (exc) {
      if (error) error.textContent = exc.message;
      else window.alert(exc.message);
      return false;
    });
  }

  function setState(state) {
    var body = { state: state };
    if (state === "break") body.reason = presence.querySelector("[data-break-reason]").value;
    return post(presence.dataset.stateUrl, body);
  }

  // --- Transfer: to an available agent with the call's skill, or to a queue ---------------

  var transferForm = document.getElementById("transfer");

  function closeTransfer() { if (transferForm) transferForm.hidden = true; }

  function openTransfer() {
    if (!transferForm) return null;
    return fetch(callbar.dataset.transferUrl, { credentials: "same-origin" })
      .then(function (response) { return response.json(); })
      .then(function (targets) {
        var select = transferForm.querySelector("select");
        select.innerHTML = "";
        [["Available agents", "agent", targets.agents, "username"], ["Queues", "queue", targets.queues, "code"]]
          .forEach(function (group) {
            var optgroup = document.createElement("optgroup");
            optgroup.label = group[0];
            (group[2] || []).forEach(function (target) {
              var option = document.createElement("option");
              option.value = group[1] + ":" + target[group[3]];
              option.textContent = target.name;
              optgroup.appendChild(option);
            });
            if (!optgroup.children.length) {
              var none = document.createElement("option");
              none.disabled = true;
              none.textContent = group[1] === "agent" ? "Nobody with this skill is available" : "No queue";
              optgroup.appendChild(none);
            }
            select.appendChild(optgroup);
          });
        transferForm.hidden = false;
        select.focus();
      });
  }

  if (transferForm) {
    transferForm.addEventListener("submit", function (event) {
      event.preventDefault();
      var to = transferForm.querySelector("select").value.split(":");
      if (!current.call || to.length !== 2) return;
      var body = {};
      body[to[0]] = to[1];
      // Refused (that agent just took another call, or lacks the skill): the list stays
      // open beside the reason, read again so it offers who is free now.
      post(callbar.dataset.callUrl + current.call.call_id + "/transfer/", body).then(function (done) {
        if (done) closeTransfer();
        else openTransfer();
      });
    });
    transferForm.addEventListener("keydown", function (event) {
      if (event.key === "Escape") { event.preventDefault(); closeTransfer(); }
      // A select does not submit its form on Enter by itself.
      else if (event.key === "Enter" && event.target.tagName === "SELECT") { event.preventDefault(); transferForm.requestSubmit(); }
    });
    transferForm.querySelector("[data-transfer-cancel]").addEventListener("click", closeTransfer);
  }

  function callControl(kind) {
    if (kind === "transfer") return openTransfer();
    if (kind === "wrap") {
      var form = document.getElementById("wrap-up");
      return post(presence.dataset.wrapUrl, Object.fromEntries(new FormData(form)));
    }
    if (!current.call) return null;
    return post(callbar.dataset.callUrl + current.call.call_id + "/" + kind + "/");
  }

  presence.addEventListener("click", function (event) {
    var button = event.target.closest("[data-set-state]");
    if (button) setState(button.dataset.setState);
  });
  if (callbar) callbar.addEventListener("click", function (event) {
    var button = event.target.closest(".callbar-actions [data-call]");
    if (button) callControl(button.dataset.call);
  });
  var wrapForm = document.getElementById("wrap-up");
  if (wrapForm) wrapForm.addEventListener("submit", function (event) {
    event.preventDefault();
    callControl("wrap");
  });

  document.addEventListener("keydown", function (event) {
    var editing = document.querySelector("form[data-editing]");
    if (editing && editing.contains(document.activeElement)) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); editing.requestSubmit(); }
      else if (event.key === "Escape") {
        event.preventDefault();
        var cancel = editing.querySelector(".form-actions button[type=button]");
        if (cancel) cancel.click();
      }
      return;
    }
    if (event.altKey || event.ctrlKey || event.metaKey || event.defaultPrevented || typing(document.activeElement)) return;
    var firstOffer = document.querySelector("[data-first-offer]");
    if (firstOffer && (event.key === "y" || event.key === "d")) {
      event.preventDefault();
      firstOffer.querySelector(event.key === "y" ? '[data-offer="accept"]' : '[data-offer="decline"]').click();
      return;
    }
    if (event.key === "e" && document.getElementById("edit-profile")) {
      event.preventDefault(); document.getElementById("edit-profile").click(); return;
    }
    var call = current.call, key = event.key;
    var busy = current.state === "ringing" || current.state === "on_call";
    if (key === "Enter" && call && call.state === "ringing" && !document.activeElement.closest("a, button")) {
      event.preventDefault(); callControl("answer");
    } else if (key === "h" && call && (call.state === "connected" || call.state === "held")) {
      event.preventDefault(); callControl(call.state === "held" ? "resume" : "hold");
    } else if (key === "t" && call && (call.state === "connected" || call.state === "held")) {
      event.preventDefault(); callControl("transfer");
    } else if (key === "x" && call && (call.state === "connected" || call.state === "held")) {
      event.preventDefault(); callControl("hangup");
    } else if (key === "w" && current.state === "wrap_up") {
      event.preventDefault(); callControl("wrap");
    } else if (!busy && (key === "a" || key === "b" || key === "o")) {
      event.preventDefault(); setState({ a: "available", b: "break", o: "offline" }[key]);
    }
  });

  // --- Notices ------------------------------------------------------------------------

  function showToast(text, href) {
    var toast = document.createElement("a");
    toast.className = "toast";
    toast.setAttribute("role", "status");
    toast.href = href;
    toast.textContent = text;
    document.body.appendChild(toast);
    setTimeout(function () { toast.remove(); }, 30000);
  }

  // --- Screen pop ---------------------------------------------------------------------

  // Once per offered call: the agent may then go anywhere (the new-customer form,
  // a search) without the next page's snapshot pulling them back.
  function pop(call) {
    var key = "crm.popped." + call.call_id + "." + (call.ring_started_at || "");
    try {
      if (window.sessionStorage.getItem(key)) return;
      window.sessionStorage.setItem(key, "1");
    } catch (e) { /* storage off: pop anyway */ }
    if (customerId !== null && call.customer_id === customerId) return; // already on screen
    window.location.href = callbar.dataset.callUrl + call.call_id + "/";
  }

  // --- The customer screen ------------------------------------------------------------

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
    if (!screen) return;
    // Never under an agent's open edit: saving it shows what changed meanwhile.
    if (screen.querySelector("form[data-editing]")) return;
    if (refreshing) { refreshAgain = true; return; }
    refreshing = true;
    var before = knownInteractions();
    var offersBefore = knownOffers();
    // The history stays on the channel the agent chose: the re-read comes filtered alike.
    var channel = chosenChannel();
    var url = screen.dataset.partUrl + (channel ? "?channel=" + encodeURIComponent(channel) : "");
    fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "live", "X-Screen-Id": screenId } })
      .then(function (response) {
        if (response.status === 404) { showLive("gone", "This customer is no longer available to you."); return null; }
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
        // An offer that arrived while the agent looked is flagged, not slipped in unseen.
        screen.querySelectorAll("[data-offer-id]").forEach(function (item) {
          if (!offersBefore[item.dataset.offerId]) item.classList.add("offer-new");
        });
        watchHistoryEnd();
        if (window.htmx) window.htmx.process(screen);
      })
      .catch(function () { showLive("stale", "Could not refresh: retrying…"); setTimeout(scheduleRefresh, 3000); })
      .then(function () {
        refreshing = false;
        if (refreshAgain) { refreshAgain = false; scheduleRefresh(); }
      });
  }

  function chosenChannel() {
    var chosen = screen && screen.querySelector('.history-filter [data-history-channel][aria-pressed="true"]');
    return chosen ? chosen.dataset.historyChannel : "";
  }

  // A profile saved, an offer answered, an edit cancelled: the server renders the
  // screen again, with the history on the channel the agent chose, as a live re-read does.
  if (screen) document.body.addEventListener("htmx:configRequest", function (event) {
    var target = event.detail.target;
    if (!target || (target.id !== "screen" && target.id !== "contact-panel")) return;
    var channel = chosenChannel();
    if (channel) event.detail.parameters.channel = channel;
  });

  function knownOffers() {
    var ids = {};
    if (screen) screen.querySelectorAll("[data-offer-id]").forEach(function (item) { ids[item.dataset.offerId] = true; });
    return ids;
  }

  // --- The contact history: one channel, and older pages as the agent scrolls ----------------

  var historyLoading = false;
  var historyObserver = "IntersectionObserver" in window ? new IntersectionObserver(function (entries) {
    entries.forEach(function (entry) { if (entry.isIntersecting) loadHistory(entry.target.dataset.historyNext, false); });
  }, { rootMargin: "300px" }) : null;

  function watchHistoryEnd() {
    if (!historyObserver || !screen) return;
    historyObserver.disconnect();
    var more = screen.querySelector("tr.history-more");
    if (more) historyObserver.observe(more);
  }

  function loadHistory(url, replace) {
    var body = screen && screen.querySelector("#history-rows");
    if (!body || !url || historyLoading) return;
    historyLoading = true;
    fetch(url, { credentials: "same-origin", headers: { "X-Screen-Id": screenId } })
      .then(function (response) {
        if (!response.ok) throw new Error(String(response.status));
        return response.text();
      })
      .then(function (html) {
        var more = body.querySelector("tr.history-more");
        if (more) more.remove();
        if (replace) body.innerHTML = html; else body.insertAdjacentHTML("beforeend", html);
        watchHistoryEnd();
      })
      .catch(function () { showLive("stale", "Could not load more history: scroll or press the button to try again."); })
      .then(function () { historyLoading = false; });
  }

  if (screen) {
    screen.addEventListener("click", function (event) {
      var chip = event.target.closest("[data-history-channel]");
      if (chip) {
        var filter = chip.closest(".history-filter");
        filter.querySelectorAll("[data-history-channel]").forEach(function (b) {
          b.setAttribute("aria-pressed", String(b === chip));
        });
        var code = chip.dataset.historyChannel;
        loadHistory(filter.dataset.historyUrl + (code ? "?channel=" + encodeURIComponent(code) : ""), true);
        return;
      }
      var more = event.target.closest("[data-history-more]");
      if (more) loadHistory(more.closest("tr.history-more").dataset.historyNext, false);
    });
    watchHistoryEnd();
  }

  // --- The floor view (supervisors) ---------------------------------------------------------

  var floorTimer = null;
  function scheduleFloor() {
    clearTimeout(floorTimer);
    floorTimer = setTimeout(function () {
      fetch(floor.dataset.partUrl, { credentials: "same-origin" })
        .then(function (response) { if (!response.ok) throw new Error(String(response.status)); return response.text(); })
        .then(function (html) { floor.innerHTML = html; sinceTick(); })
        .catch(function () { setTimeout(scheduleFloor, 3000); });
    }, 400);
  }

  function sinceTick() {
    document.querySelectorAll("time[data-since]").forEach(function (el) { el.textContent = clock(el.dataset.since); });
  }
  if (document.querySelector("time[data-since]") || floor) { sinceTick(); setInterval(sinceTick, 1000); }

  if (floor) floor.addEventListener("click", function (event) {
    var button = event.target.closest("[data-offline]");
    if (!button) return;
    button.disabled = true;
    fetch(floor.dataset.offlineUrl + button.dataset.offline + "/offline/", {
      method: "POST", credentials: "same-origin", headers: { "X-CSRFToken": csrf },
    }).then(function (response) {
      return response.json().then(function (data) {
        if (!response.ok) { window.alert(data.error || "Could not sign the agent off."); button.disabled = false; }
        scheduleFloor();
      });
    });
  });

  // --- The socket -----------------------------------------------------------------------

  function onFrame(frame) {
    if (frame.event === "presence") {
      apply(frame);
      if (floor && everConnected) scheduleFloor();
      if (floor) everConnected = true;
      if (frame.call && frame.state === "ringing") pop(frame.call);
      if (customerId !== null) socket.send(JSON.stringify({ action: "watch", customer_id: customerId }));
      return;
    }
    if (floor && /^(agent\.state|call\.changed|queue\.changed)$/.test(frame.event)) scheduleFloor();
    if (frame.event === "agent.state") { if (frame.agent_id === userId) apply(frame); return; }
    if (frame.event === "callback.due") {
      showToast("Callback due: " + frame.title, "/customer/" + frame.customer_id + "/");
      return;
    }
    if (frame.event === "call.offered") {
      // The pop also says the agent is ringing: a new call's arrival sends the desk no
      // agent.state frame of its own.
      current.state = "ringing"; current.reason = "";
      current.since = frame.ring_started_at || current.since;
      current.call = frame; render(); pop(frame);
      return;
    }
    if (frame.event === "call.changed") {
      if (current.call && current.call.call_id === frame.call_id) { current.call = frame; renderCall(); }
      return;
    }
    if (frame.event === "watching" && frame.customer_id === customerId) {
      showLive("live", "Live");
      // Anything that changed while the socket was down is in the rows: re-read them.
      if (everConnected) scheduleRefresh();
      everConnected = true;
      return;
    }
    if (frame.error) { if (customerId !== null) showLive("gone", frame.error); return; }
    if (customerId === null || frame.customer_id !== customerId) return;
    if (frame.event === "customer.updated" && frame.version && frame.version <= version()) return;
    scheduleRefresh();
  }

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + window.location.host + "/ws/desktop/");
    socket.onopen = function () {
      attempt = 0;
      clearInterval(heartbeat);
      heartbeat = setInterval(function () {
        if (socket && socket.readyState === 1) socket.send(JSON.stringify({ action: "heartbeat" }));
      }, 20000);
      socket.send(JSON.stringify({ action: "heartbeat" }));
    };
    socket.onmessage = function (message) {
      var frame;
      try { frame = JSON.parse(message.data); } catch (e) { return; }
      onFrame(frame);
    };
    socket.onclose = function (event) {
      socket = null;
      clearInterval(heartbeat);
      if (event.code === 4403) {
        current.state = "unknown"; render();
        showLive("gone", "Signed out: sign in again to see live changes.");
        return;
      }
      attempt += 1;
      var delay = Math.min(30000, 1000 * Math.pow(2, attempt - 1)) * (0.75 + Math.random() / 2);
      if (customerId !== null) showLive("reconnecting", "Reconnecting…");
      presence.querySelector(".presence-label").textContent = "Reconnecting…";
      setTimeout(connect, delay);
    };
  }

  // A laptop waking up or a network coming back: try at once rather than wait out the back-off.
  window.addEventListener("online", function () { if (!socket) { attempt = 0; connect(); } });
  render();
  connect();
})();
