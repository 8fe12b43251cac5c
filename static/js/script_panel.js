// The script panel on the customer screen (templates/scripting/_panel.html).
// Keys, when not typing: j next, k back, s start the script (answering a call
// whose queue has a script starts it by itself); Ctrl+Enter in an answer goes
// to the next step. Answers are saved as they change (htmx on each
// question); text still being typed is kept across the screen's live re-reads.
(function () {
  "use strict";
  if (window.scriptPanelReady) return;
  window.scriptPanelReady = true;

  var typed = {}; // "run:question" -> what the agent is typing, not yet saved

  function panel() { return document.getElementById("script-panel"); }

  function typing(el) {
    return el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));
  }

  function click(selector) {
    var el = panel() && panel().querySelector(selector);
    if (el && !el.disabled) { el.click(); return true; }
    return false;
  }

  document.addEventListener("keydown", function (event) {
    var p = panel();
    if (!p || event.altKey || event.metaKey || event.defaultPrevented) return;
    var active = document.activeElement;
    if (p.contains(active) && typing(active)) {
      if (event.key === "Enter" && event.ctrlKey) {
        event.preventDefault();
        var form = p.querySelector(".script-form");
        if (form) form.requestSubmit();
      }
      return;
    }
    if (event.ctrlKey || typing(active)) return;
    if (document.querySelector("form[data-editing]")) return;
    var done = false;
    if (event.key === "j") done = click("[data-script-next]");
    else if (event.key === "k") done = click("[data-script-back]");
    else if (event.key === "s") done = click("[data-script-start]");
    if (done) event.preventDefault();
  });

  document.addEventListener("input", function (event) {
    var p = panel(), el = event.target;
    if (!p || !p.contains(el) || !el.name || el.type === "radio" || el.type === "checkbox") return;
    typed[p.dataset.run + ":" + el.name] = el.value;
  });
  document.addEventListener("change", function (event) {
    var p = panel(), el = event.target;
    if (p && p.contains(el) && el.name) delete typed[p.dataset.run + ":" + el.name];
  });

  // After the panel is swapped in (a step moved, or the live screen re-read itself):
  // put back what was being typed, and put the agent on the first question of a new step.
  var lastStep = null;
  function settle() {
    var p = panel();
    if (!p) return;
    Object.keys(typed).forEach(function (key) {
      var parts = key.split(":");
      if (parts[0] !== p.dataset.run) return;
      var input = p.querySelector('input[name="' + parts[1] + '"]');
      if (input && input.value !== typed[key]) input.value = typed[key];
    });
    var step = p.dataset.run + ":" + p.dataset.step;
    if (step !== lastStep) {
      var first = lastStep !== null && p.querySelector(".script-q input, [data-script-next], [data-script-start]");
      lastStep = step;
      if (first && !typing(document.activeElement)) first.focus({ preventScroll: true });
    }
  }
  // A dropped connection: say so where the agent looks; nothing on screen is lost,
  // and what was saved is on the server (the panel re-reads it when the page comes back).
  function failed(event) {
    var p = panel(), elt = event.detail && event.detail.elt;
    if (!p || !elt || !p.contains(elt)) return;
    var where = elt.closest("[data-question]");
    var box = where ? where.querySelector(".script-q-msg") : p.querySelector(".script-actions");
    if (!box) return;
    var note = box.querySelector(".script-offline") || document.createElement("span");
    note.className = "field-error-text script-offline";
    note.setAttribute("role", "alert");
    note.textContent = where ? "Not saved: the connection dropped. It is kept here; change it again or press Next when back online."
                             : "Not sent: the connection dropped. Your answers are still here: try again when back online.";
    if (!note.parentNode) box.prepend(note);
  }
  document.body.addEventListener("htmx:sendError", failed);
  document.body.addEventListener("htmx:responseError", failed);

  // Answering a call starts its queue's script by itself, once per call: the
  // server starts one only for this customer's answered call with a script
  // assigned, and otherwise answers with the panel as it was (nothing to show).
  var autoDone = false;
  function autoStart() {
    var bar = document.getElementById("callbar"), p = panel();
    if (!bar || !p) return;
    if (bar.hidden || bar.dataset.state !== "connected") { autoDone = false; return; }
    if (autoDone) return;
    autoDone = true;
    var auto = p.querySelector("[data-script-auto]");
    if (auto && !p.dataset.run) auto.click();
  }
  var bar = document.getElementById("callbar");
  if (bar) new MutationObserver(autoStart).observe(bar, { attributes: true, attributeFilter: ["data-state", "hidden"] });

  new MutationObserver(settle).observe(document.body, { childList: true, subtree: true });
  settle();
  document.addEventListener("DOMContentLoaded", autoStart); // after htmx has read the panel
})();
