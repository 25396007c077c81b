// The frame every page shares: sign-in (API key entered once per tab), the principal in the header, and admin
// gating. The gateway says what the key may do (GET /v1/whoami); the console never guesses from failures.
// Admin controls carry data-admin: for a user key they stay visible, marked aria-disabled, and explain
// themselves when tried. The server enforces the same rule (403) whatever the page does.

import { api, session, setUnauthorizedHandler } from "./api.js";
import { $, toast } from "./dom.js";

const ADMIN_MESSAGE =
  "This action needs an admin key. You are signed in with a user key: sign in with an admin key to " +
  "register or delete adapters, edit aliases, or change collections.";

function gate(el) {
  el.setAttribute("aria-disabled", "true");
  el.classList.add("is-disabled");
  el.title = "Needs an admin key";
}

function installAdminGate(root) {
  const gated = (target) => target instanceof Element && target.closest('[data-admin][aria-disabled="true"], [data-admin-zone][aria-disabled="true"]');
  for (const el of root.querySelectorAll("[data-admin], [data-admin-zone]")) gate(el);
  new MutationObserver((mutations) => {
    for (const m of mutations) {
      for (const node of m.addedNodes) {
        if (!(node instanceof Element)) continue;
        if (node.matches("[data-admin], [data-admin-zone]")) gate(node);
        for (const el of node.querySelectorAll("[data-admin], [data-admin-zone]")) gate(el);
      }
    }
  }).observe(root, { childList: true, subtree: true });
  const refuse = (event) => {
    event.preventDefault();
    event.stopImmediatePropagation();
    toast(ADMIN_MESSAGE, "warn");
  };
  root.addEventListener("click", (e) => gated(e.target) && refuse(e), true);
  root.addEventListener("drop", (e) => gated(e.target) && refuse(e), true);
  root.addEventListener("dragover", (e) => gated(e.target) && e.preventDefault(), true);
  root.addEventListener(
    "submit",
    (e) => {
      const submitter = e.submitter || e.target.querySelector("[type=submit]");
      if (submitter && gated(submitter)) refuse(e);
    },
    true,
  );
}

async function whoami() {
  try {
    return await api("/v1/whoami", { quiet401: true });
  } catch (err) {
    if (err.status === 401) return null;
    throw err;
  }
}

function showSignin(message = "") {
  const section = $("#signin");
  const error = $("#signin-error");
  $("#main").hidden = true;
  $("#session").hidden = true;
  section.hidden = false;
  error.hidden = !message;
  error.textContent = message;
  $("#signin-key").focus();
  return new Promise((resolve) => {
    const form = $("#signin-form");
    const onSubmit = async (event) => {
      event.preventDefault();
      const key = $("#signin-key").value.trim();
      if (!key) {
        error.textContent = "Enter an API key.";
        error.hidden = false;
        return;
      }
      session.key = key;
      const principal = await whoami().catch((err) => {
        error.textContent = `The gateway did not answer: ${err.message}`;
        error.hidden = false;
        return undefined;
      });
      if (principal === undefined) return;
      if (principal === null) {
        session.key = "";
        error.textContent = "That key was not accepted by this gateway.";
        error.hidden = false;
        $("#signin-key").select();
        return;
      }
      form.removeEventListener("submit", onSubmit);
      $("#signin-key").value = "";
      section.hidden = true;
      resolve(principal);
    };
    form.addEventListener("submit", onSubmit);
  });
}

function showPrincipal(principal) {
  const role = $("#session-role");
  role.textContent = principal.admin ? "admin" : "user";
  role.className = `badge ${principal.admin ? "badge-info" : "badge-neutral"}`;
  $("#session-key").textContent = principal.auth_required ? `key ${principal.key_hint}` : "open gateway (no keys)";
  $("#sign-out").hidden = !principal.auth_required;
  $("#session").hidden = false;
  $("#readonly-banner").hidden = principal.admin;
}

// Signs in (if needed), then runs the page's mount({principal}).
export async function boot(mount) {
  $("#sign-out").addEventListener("click", () => {
    session.key = "";
    location.reload();
  });
  setUnauthorizedHandler(() => {
    session.key = "";
    toast("The gateway rejected the key; sign in again.", "error");
    setTimeout(() => location.reload(), 1500);
  });
  let principal = await whoami();
  if (!principal) {
    const stale = Boolean(session.key);
    session.key = "";
    principal = await showSignin(stale ? "That key is no longer accepted." : "");
  }
  session.principal = principal;
  showPrincipal(principal);
  const main = $("#main");
  if (!principal.admin) installAdminGate(main);
  main.hidden = false;
  try {
    await mount({ principal, main });
  } catch (err) {
    console.error(err);
    toast(`Could not load this page: ${err.message}`, "error", 0);
  }
  document.body.dataset.ready = "true"; // the page has loaded its data (tests and scripts can wait on this)
}
