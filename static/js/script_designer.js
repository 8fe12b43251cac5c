// The designer's forms show only the fields that apply: a question's rules for
// its type, a branch's answer or CEL condition, an action's own settings.
// A fieldset with data-when="name:value value" shows (and posts) only while the
// form's control `name` holds one of those values. Without this file every
// field shows and the server reads only the ones that apply.
(function () {
  "use strict";

  function sync(form) {
    form.querySelectorAll("fieldset[data-when]").forEach(function (set) {
      var rule = set.getAttribute("data-when").split(":");
      var control = form.elements.namedItem(rule[0]);
      if (!control) return;
      var on = rule[1].split(" ").indexOf(control.value) !== -1;
      set.hidden = !on;
      set.disabled = !on;
    });
  }

  function syncAll(root) {
    root.querySelectorAll("form").forEach(function (form) {
      if (form.querySelector("fieldset[data-when]")) sync(form);
    });
  }

  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target.hasAttribute && target.hasAttribute("data-shows") && target.form) sync(target.form);
  });
  document.addEventListener("DOMContentLoaded", function () { syncAll(document); });
  document.addEventListener("htmx:afterSwap", function (event) { syncAll(event.target); });
})();
