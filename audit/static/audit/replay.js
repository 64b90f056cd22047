// The session page's behaviour: an asciinema-player for each exec/attach recording, and the
// masked request/response bodies fetched (as text, never as HTML) when their <details> opens.
(function () {
  "use strict";

  function startPlayers() {
    document.querySelectorAll("[data-cast-url]").forEach(function (element) {
      AsciinemaPlayer.create(element.dataset.castUrl, element, {
        cols: Number(element.dataset.cols) || 80,
        rows: Number(element.dataset.rows) || 24,
        idleTimeLimit: 2,
        preload: true,
        terminalFontSize: "small",
      });
    });
  }

  function loadBody(event) {
    var details = event.target;
    if (!(details instanceof HTMLDetailsElement) || !details.open) return;
    var pre = details.querySelector("pre[data-src]");
    if (!pre || pre.dataset.state) return;
    pre.dataset.state = "loading";
    fetch(pre.dataset.src, { credentials: "same-origin", headers: { Accept: "text/plain" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (text) {
        pre.textContent = text;
        pre.dataset.state = "loaded";
      }, function (error) {
        pre.textContent = "The body could not be loaded (" + error.message + ").";
        delete pre.dataset.state;
      });
  }

  startPlayers();
  document.addEventListener("toggle", loadBody, true);
})();
