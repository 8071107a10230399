// Reloads the page every 30 s while it is visible; the page works the same without it.
"use strict";
setInterval(function () {
  if (document.visibilityState === "visible") {
    location.reload();
  }
}, 30000);
