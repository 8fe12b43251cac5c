// The policy editor: a live check of the condition while typing (errors marked at
// their line and column), the fields the ticked triggers share, each action's
// settings shown for the action chosen, Ctrl+Enter to save. No dependency.
(function () {
  "use strict";

  function csrf(form) {
    var input = form.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function offsetOf(text, line, column) {
    var lines = text.split("\n");
    var offset = 0;
    for (var i = 0; i < line - 1 && i < lines.length; i++) offset += lines[i].length + 1;
    return offset + Math.max(column - 1, 0);
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function showProblems(out, area, body) {
    out.textContent = "";
    area.setAttribute("aria-invalid", body.ok ? "false" : "true");
    if (body.ok) {
      out.appendChild(el("p", "check-ok", area.value.trim() ? "✓ The condition compiles and its fields and types check out."
                                                           : "No condition: the policy acts on every trigger event."));
      return;
    }
    var lines = area.value.split("\n");
    body.problems.forEach(function (p) {
      var item = el("div", "check-problem");
      if (p.line > 0) {
        var jump = el("button", "link-like", "Line " + p.line + ", column " + p.column);
        jump.type = "button";
        jump.title = "Put the cursor there";
        jump.addEventListener("click", function () {
          var at = offsetOf(area.value, p.line, p.column);
          area.focus();
          area.setSelectionRange(at, at + 1);
        });
        item.appendChild(jump);
        item.appendChild(document.createTextNode(": " + p.message));
        var source = lines[p.line - 1] || "";
        item.appendChild(el("pre", "check-caret", source + "\n" + " ".repeat(Math.max(p.column - 1, 0)) + "^"));
      } else {
        item.appendChild(document.createTextNode(p.message));
      }
      out.appendChild(item);
    });
  }

  function showFields(list, label, fields, types) {
    list.textContent = "";
    label.textContent = types.length ? types.join(", ") : "tick a trigger";
    var names = Object.keys(fields || {});
    if (!names.length) {
      list.appendChild(el("li", "muted", "Tick a trigger type to see its fields."));
      return;
    }
    names.forEach(function (name) {
      var li = el("li");
      var button = el("button", "insert mono", "event." + name);
      button.type = "button";
      button.dataset.insert = "event." + name;
      li.appendChild(button);
      li.appendChild(document.createTextNode(" "));
      li.appendChild(el("span", "muted", fields[name]));
      list.appendChild(li);
    });
  }

  function setUp(form) {
    var area = form.querySelector("textarea[name=condition]");
    var out = document.getElementById("condition-check");
    var list = document.getElementById("event-fields");
    var label = document.getElementById("fields-for");
    var timer = null;
    var asked = 0;

    function ticked() {
      return Array.prototype.map.call(form.querySelectorAll("input[name=trigger_types]:checked"), function (b) { return b.value; });
    }

    function check() {
      var data = new FormData();
      var types = ticked();
      types.forEach(function (t) { data.append("trigger_types", t); });
      data.append("condition", area.value);
      var mine = ++asked;
      fetch(form.dataset.checkUrl, { method: "POST", body: data, credentials: "same-origin",
                                     headers: { "X-CSRFToken": csrf(form) } })
        .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
        .then(function (body) {
          if (mine !== asked) return;  // a later keystroke's answer is on its way
          showProblems(out, area, body);
          showFields(list, label, body.fields, types);
        })
        .catch(function () {
          if (mine === asked) out.textContent = "Could not check the condition just now; it is checked again when you save.";
        });
    }

    function later() {
      clearTimeout(timer);
      timer = setTimeout(check, 250);
    }

    area.addEventListener("input", later);
    form.querySelectorAll("input[name=trigger_types]").forEach(function (b) { b.addEventListener("change", later); });

    form.addEventListener("click", function (e) {
      var button = e.target.closest("[data-insert]");
      if (!button) return;
      var text = button.dataset.insert;
      var start = area.selectionStart, end = area.selectionEnd;
      area.setRangeText(text, start, end, "end");
      area.focus();
      later();
    });
    form.querySelectorAll("[data-action-row]").forEach(function (row) {
      var select = row.querySelector("[data-action-select]");
      function show() {
        row.querySelectorAll("[data-action-settings]").forEach(function (set) {
          set.hidden = set.dataset.actionSettings !== select.value;
        });
      }
      select.addEventListener("change", show);
      show();
    });

    form.addEventListener("keydown", function (e) {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
        e.preventDefault();
        form.requestSubmit();
      }
    });
    if (area.value.trim() || ticked().length) check();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("policy-form");
    if (form) setUp(form);
  });
  document.addEventListener("submit", function (e) {
    var button = e.submitter;
    if (button && button.dataset.confirm && !window.confirm(button.dataset.confirm)) e.preventDefault();
  });
})();
