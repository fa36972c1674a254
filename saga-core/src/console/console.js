// The console's own script. A page whose body has `data-refresh="MS"` fetches itself again
// every MS milliseconds and swaps in the new version of each element marked `data-live`
// (matched by id), until a fetched page no longer asks for refreshing. A session that has
// ended shows the sign-in form: the page is then loaded anew.
"use strict";

(function () {
  const every = Number(document.body.dataset.refresh);
  if (!every) {
    return;
  }

  async function refresh() {
    if (document.hidden) {
      return true;
    }
    const reply = await fetch(window.location.href, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "text/html" },
    });
    if (reply.redirected || reply.status === 401 || reply.status === 403) {
      window.location.reload();
      return false;
    }
    if (!reply.ok) {
      return true;
    }
    const page = new DOMParser().parseFromString(await reply.text(), "text/html");
    for (const part of document.querySelectorAll("[data-live]")) {
      const next = page.getElementById(part.id);
      if (next) {
        part.replaceWith(document.adoptNode(next));
      }
    }
    document.body.dataset.refreshedAt = String(Date.now());
    return Boolean(page.body.dataset.refresh);
  }

  function schedule() {
    window.setTimeout(async function () {
      let again = true;
      try {
        again = await refresh();
      } catch (error) {
        // The server may be restarting: try again on the next round.
      }
      if (again) {
        schedule();
      }
    }, every);
  }

  schedule();
})();
