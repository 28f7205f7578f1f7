// pflow-explore dashboards: a part of the page that failed to start says so on the page.
//
// A widget whose front end fails (a module that does not load, anywidget's model timeout,
// a view whose model is gone) leaves a figure that is drawn but dead, and says so only in
// the browser console, which a class never sees. This script watches for those errors and
// puts one line at the top of the page: what failed and what to do.
(function () {
  "use strict";
  var FAILURES = [
    /\[anywidget\]/,
    /\[pflow-explore\]/,
    /widget model not found/i,
    /Failed to (create|initialize|load) (model|module|widget)/i,
    /Could not create a (model|view)/i,
    /Class \S+ not found in module/i,
    /No version of module \S+ is registered/i,
    /Error (creating|rendering|displaying) (a )?(view|widget|model)/i,
  ];

  function describe(args) {
    return Array.prototype.map
      .call(args, function (a) {
        return a && a.message ? a.message : String(a);
      })
      .join(" ");
  }

  function banner(text) {
    if (document.getElementById("pflow-page-failure")) return;
    var box = document.createElement("div");
    box.id = "pflow-page-failure";
    box.setAttribute("role", "alert");
    box.style.cssText =
      "position:sticky;top:0;z-index:10000;color:#b00020;background:#fdecea;" +
      "border-bottom:2px solid #b00020;padding:8px 14px;font:14px sans-serif;";
    box.textContent =
      "Part of this page did not start, so some figures or controls may not respond (" +
      text.slice(0, 240) +
      "). Reload the page. If it happens again, the server may be overloaded or its " +
      "files out of date: restart it (pflow-explore serve); see the README, " +
      '"Dashboards for a class".';
    document.body.insertBefore(box, document.body.firstChild);
  }

  function check(args) {
    var text = describe(args);
    for (var i = 0; i < FAILURES.length; i++) {
      if (FAILURES[i].test(text)) {
        if (document.body) banner(text);
        else
          document.addEventListener("DOMContentLoaded", function () {
            banner(text);
          });
        return;
      }
    }
  }

  var consoleError = console.error;
  console.error = function () {
    check(arguments);
    return consoleError.apply(console, arguments);
  };
  window.addEventListener("unhandledrejection", function (event) {
    check([event.reason]);
  });
  window.addEventListener("error", function (event) {
    check([event.error || event.message]);
  });
})();
