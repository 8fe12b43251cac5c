// Keyboard-first desktop: "/" searches, arrows choose a customer, Enter opens it.
// Everything here is an enhancement: every page works with plain links and forms.
(function () {
  "use strict";

  function searchBox() { return document.getElementById("search"); }
  function results() { return Array.from(document.querySelectorAll("#results [data-result]")); }

  function typing(el) {
    if (!el) return false;
    var tag = el.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || el.isContentEditable;
  }

  function focusResult(index) {
    var links = results();
    if (!links.length) return false;
    var i = Math.max(0, Math.min(index, links.length - 1));
    links[i].focus();
    links[i].closest("tr").scrollIntoView({ block: "nearest" });
    return true;
  }

  function pageLink(which) { return document.querySelector('#results [data-page="' + which + '"]'); }

  // After a page change from the keyboard, put the agent back on the first row.
  var focusAfterSwap = false;

  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey || event.defaultPrevented) return;
    var active = document.activeElement;
    var box = searchBox();

    // In the box itself "/" selects what is there, ready for the next search: the box
    // has focus on page load and names, e-mails and account numbers never hold "/".
    // After a digit it is typed, for numbers written like 030/1234567.
    var boxIdle = box && active === box && !/\d$/.test(box.value.slice(0, box.selectionStart));
    if (event.key === "/" && (!typing(active) || boxIdle)) {
      event.preventDefault();
      if (box) {
        box.focus();
        box.select();
      } else {
        // Pages without the box (the customer screen) go to the search page.
        window.location.href = document.querySelector(".brand").getAttribute("href");
      }
      return;
    }

    if (box && active === box && event.key === "ArrowDown") {
      if (focusResult(0)) event.preventDefault();
      return;
    }

    var links = results();
    var index = links.indexOf(active);
    if (index !== -1) {
      if (event.key === "ArrowDown") { event.preventDefault(); focusResult(index + 1); }
      else if (event.key === "ArrowUp") {
        event.preventDefault();
        if (index === 0 && box) box.focus(); else focusResult(index - 1);
      } else if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
        var link = pageLink(event.key === "ArrowRight" ? "next" : "prev");
        if (link) { event.preventDefault(); focusAfterSwap = true; link.click(); }
      } else if (event.key === "Escape" && box) { event.preventDefault(); box.focus(); box.select(); }
      return;
    }

    if (event.key === "n" && !typing(active)) {
      var create = document.querySelector("[data-new-customer]");
      if (create) { event.preventDefault(); window.location.href = create.href; return; }
    }

    if (event.key === "Escape" && !typing(active) && !document.querySelector("form[data-editing]")) {
      var back = document.querySelector("[data-back]");
      if (back) { event.preventDefault(); window.location.href = back.href; }
    }
  });

  // A click anywhere on a result row opens that customer, as the name link does.
  document.addEventListener("click", function (event) {
    var row = event.target.closest && event.target.closest(".result-row");
    if (!row || event.target.closest("a") || window.getSelection().toString()) return;
    var link = row.querySelector("[data-result]");
    if (link) link.click();
  });

  document.addEventListener("htmx:afterSwap", function (event) {
    if (!event.detail.target || event.detail.target.id !== "results") return;
    var box = searchBox();
    var error = document.getElementById("search-error");
    if (box) {
      if (error) {
        box.setAttribute("aria-invalid", "true");
        box.setAttribute("aria-describedby", "search-error");
      } else {
        box.removeAttribute("aria-invalid");
        box.removeAttribute("aria-describedby");
      }
    }
    if (focusAfterSwap) { focusAfterSwap = false; focusResult(0); }
  });

  // The customer's wall clock keeps time while the screen stays open.
  function tick() {
    document.querySelectorAll("time[data-clock]").forEach(function (el) {
      try {
        el.textContent = new Intl.DateTimeFormat("en-GB", {
          weekday: "short", hour: "2-digit", minute: "2-digit", hourCycle: "h23",
          timeZone: el.getAttribute("data-clock"),
        }).format(new Date()).replace(",", "");
      } catch (e) { /* unknown zone: keep the server's rendering */ }
    });
  }
  if (document.querySelector("time[data-clock]")) setInterval(tick, 30000);
})();
