// Adapters: versions with per-replica state (GET /v1/adapters), manifests (GET /v1/adapters/{ref}/manifest),
// register (POST /v1/adapters) from a directory under the adapter roots (GET /v1/adapter-roots, admin), delete,
// and aliases (GET/PUT/DELETE /v1/aliases). An alias shows its targets as a weighted list (one at 100 %, or a
// canary split); its history (GET /v1/aliases/{name}/history: who, when, old → new, why) opens below the table,
// with a Rollback button (POST /v1/aliases/{name}/rollback, admin only).

import { api } from "../api.js";
import {
  $, badge, breakable, chip, clear, confirmDialog, fixed, h, kv, lineChart, num, plural, showError, stateBadge, table,
  toast, when, wireCloseButtons,
} from "../dom.js";
import { boot } from "../shell.js";

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
let state = { adapters: [], aliases: [], collections: [], sources: null, baseModel: null, principal: null, history: null };

function aliasTargets(alias) {
  // Weighted aliases (adapter lifecycle) list several targets; a plain alias has one at 100 %.
  if (Array.isArray(alias.targets)) return alias.targets.map((t) => ({ target: t.target ?? t.model, weight: t.weight }));
  return [{ target: alias.target, weight: 100 }];
}

function replicaChips(version) {
  if (!version.replicas.length) return h("span", { class: "muted" }, "no replica");
  return h(
    "div",
    { class: "chips" },
    version.replicas.map((r) =>
      h("span", { class: "chip-state", "data-replica": r.replica, "data-state": r.state, title: r.error || r.url },
        h("span", { class: "muted" }, `#${r.replica}`), " ", stateBadge(r.state)),
    ),
  );
}

function groupByName(adapters) {
  const groups = new Map();
  for (const a of adapters) {
    if (!groups.has(a.name)) groups.set(a.name, []);
    groups.get(a.name).push(a);
  }
  for (const versions of groups.values()) versions.sort((x, y) => y.version - x.version);
  return groups;
}

function aliasesOf(ref) {
  return state.aliases.filter((a) => aliasTargets(a).some((t) => t.target === ref)).map((a) => a.alias);
}

function renderAdapters() {
  const root = $("#adapters");
  const groups = groupByName(state.adapters);
  $("#adapters-note").textContent = `${plural(state.adapters.length, "version")} of ${plural(groups.size, "adapter")}`;
  if (!groups.size) {
    clear(root, h("p", { class: "empty" }, "No adapter is registered yet. Register one from a directory under the adapter roots."));
    return;
  }
  clear(
    root,
    [...groups.entries()].map(([name, versions]) =>
      h(
        "article",
        { class: "group", "data-adapter": name },
        h(
          "header",
          { class: "group-head" },
          h("h3", {}, name),
          badge(`latest v${versions.find((v) => v.latest)?.version ?? versions[0].version}`, "info"),
          versions[0].default_collection ? badge(`RAG: ${versions[0].default_collection}`, "neutral") : null,
        ),
        table(
          [
            { label: "Version", render: (v) => h("span", {}, h("code", {}, v.model), v.latest ? " " : null, v.latest ? badge("latest", "ok") : null) },
            { label: "Rank", render: (v) => String(v.rank), class: "num" },
            { label: "Targets", render: (v) => h("div", { class: "chips" }, v.target_modules.map((t) => chip(t))) },
            { label: "Base check", render: (v) => v.base_check },
            { label: "Aliases", render: (v) => (aliasesOf(v.model).length ? h("div", { class: "chips" }, aliasesOf(v.model).map((a) => chip(a, "chip-accent"))) : "—") },
            { label: "Created", render: (v) => when(v.created_at) },
            { label: "Replicas", render: replicaChips, class: "wide" },
            {
              label: "Actions",
              render: (v) =>
                h(
                  "div",
                  { class: "actions" },
                  h("button", { type: "button", class: "btn btn-sm", onclick: () => openManifest(v) }, "Manifest"),
                  h("button", { type: "button", class: "btn btn-sm btn-danger", "data-admin": true, onclick: () => deleteVersion(v) }, "Delete"),
                ),
            },
          ],
          versions,
          { rowAttrs: (v) => ({ "data-version": v.model }) },
        ),
      ),
    ),
  );
}

function renderAliases() {
  clear(
    $("#aliases"),
    table(
      [
        { label: "Alias", render: (a) => h("code", {}, a.alias) },
        {
          label: "Targets",
          class: "wide",
          render: (a) =>
            h(
              "ul",
              { class: "weights" },
              aliasTargets(a).map((t) =>
                h(
                  "li",
                  {},
                  h("code", {}, t.target),
                  h("span", { class: "weight-bar", "aria-hidden": "true" }, h("span", { class: "weight-fill", style: `width:${Math.max(0, Math.min(100, t.weight))}%` })),
                  h("span", { class: "num" }, `${num(t.weight, 1)} %`),
                ),
              ),
            ),
        },
        {
          label: "Shadow",
          render: (a) => (a.shadow ? h("span", { class: "shadow" }, h("code", {}, a.shadow.candidate), ` sees ${num(a.shadow.percent, 1)} %`) : "—"),
        },
        { label: "Default collection", render: (a) => a.default_collection || "—" },
        { label: "Updated", render: (a) => when(a.updated_at) },
        {
          label: "Actions",
          render: (a) =>
            h(
              "div",
              { class: "actions" },
              h("button", { type: "button", class: "btn btn-sm", onclick: () => showHistory(a.alias) }, "History"),
              h("button", { type: "button", class: "btn btn-sm", "data-admin": true, onclick: () => editAlias(a) }, "Edit"),
              h("button", { type: "button", class: "btn btn-sm btn-danger", "data-admin": true, onclick: () => deleteAlias(a) }, "Delete"),
            ),
        },
      ],
      state.aliases,
      { empty: "No alias yet. An alias gives clients a stable name while you switch versions behind it.", rowAttrs: (a) => ({ "data-alias": a.alias }) },
    ),
  );
}

function splitText(targets) {
  return targets.length ? targets.map((t) => `${t.target} ${t.weight} %`).join(", ") : "—";
}

async function showHistory(alias) {
  state.history = alias;
  const root = $("#alias-history");
  root.hidden = false;
  let history;
  try {
    history = await api(`/v1/aliases/${encodeURIComponent(alias)}/history`);
  } catch (err) {
    clear(root, h("p", { class: "form-error" }, err.message));
    return;
  }
  const current = state.aliases.some((a) => a.alias === alias);
  clear(
    root,
    h(
      "div",
      { class: "card-head" },
      h("h3", { id: "alias-history-title" }, `History of ${alias}`),
      current
        ? h("button", { type: "button", class: "btn btn-sm btn-danger", "data-admin": true, onclick: () => rollback(alias) }, "Rollback")
        : null,
    ),
    table(
      [
        { label: "When", render: (c) => when(c.at) },
        { label: "Change", render: (c) => badge(c.kind.replace("alias.", ""), c.kind === "alias.rollback" ? "warn" : "neutral") },
        { label: "By", render: (c) => c.actor || "—" },
        { label: "Before", render: (c) => splitText(c.old) },
        { label: "After", render: (c) => splitText(c.new), class: "wide" },
        { label: "Reason", render: (c) => c.reason || "—" },
      ],
      history.data,
      { empty: "No recorded change.", rowAttrs: (c) => ({ "data-change": c.id, "data-kind": c.kind }) },
    ),
  );
}

async function rollback(alias) {
  $("#rollback-text").textContent = `${alias} returns at once to the targets it had before its latest change.`;
  if (!(await confirmDialog($("#rollback-dialog")))) return;
  try {
    const saved = await api(`/v1/aliases/${encodeURIComponent(alias)}/rollback`, { method: "POST", json: { reason: "rolled back from the console" } });
    toast(`${saved.alias} → ${splitText(saved.targets)}`, "ok");
  } catch (err) {
    toast(err.message, "error");
  }
  await load();
}

function renderSelects() {
  const targets = $("#alias-target");
  const current = targets.value;
  const groups = groupByName(state.adapters);
  clear(
    targets,
    h("option", { value: "" }, "Choose a version…"),
    [...groups.entries()].map(([name, versions]) =>
      h("optgroup", { label: name }, versions.map((v) => h("option", { value: v.model }, `${v.model}${v.latest ? " (latest)" : ""}`))),
    ),
  );
  targets.value = current;
  for (const select of [$("#reg-collection"), $("#alias-collection")]) {
    const value = select.value;
    clear(select, h("option", { value: "" }, "None"), state.collections.map((c) => h("option", { value: c.name }, c.name)));
    select.value = value;
  }
}

function renderSources() {
  const root = $("#sources");
  if (!state.principal.admin) {
    clear(root, h("p", { class: "empty" }, "The directories under the adapter roots are listed for admin keys."));
    return;
  }
  if (!state.sources) return;
  $("#roots-note").textContent = state.sources.roots.join(", ");
  clear($("#reg-sources"), state.sources.data.map((s) => h("option", { value: s.path }, s.name || "")));
  clear(
    root,
    table(
      [
        { label: "Directory", render: (s) => breakable(s.path) },
        {
          label: "Manifest",
          render: (s) => (s.manifest_error ? badge("unreadable", "bad", s.manifest_error) : s.name ? `${s.name} · r${s.rank} · ${s.base_model}` : h("span", { class: "muted" }, "plain peft")),
        },
        { label: "Registered", render: (s) => (s.registered_as.length ? h("div", { class: "chips" }, s.registered_as.map((r) => chip(r))) : "—") },
        { label: "", render: (s) => h("button", { type: "button", class: "btn btn-sm", onclick: () => useSource(s) }, "Use") },
      ],
      state.sources.data,
      { empty: "No adapter directory (with an adapter_config.json) under the roots.", rowAttrs: (s) => ({ "data-source": s.path }) },
    ),
    state.sources.truncated ? h("p", { class: "help" }, "Only the first directories found are listed.") : null,
  );
}

function useSource(source) {
  $("#reg-path").value = source.path;
  if (!$("#reg-name").value && source.name) $("#reg-name").value = source.name;
  $("#reg-name").focus();
}

function loss(metrics) {
  const curve = metrics?.loss_curve?.train;
  if (!Array.isArray(curve) || curve.length < 2) return null;
  const points = curve.map(([step, value]) => ({ t: step, loss: value }));
  return h("figure", { class: "mini-chart" }, lineChart(points, [{ key: "loss", class: "s-primary" }], { height: 80 }),
    h("figcaption", { class: "muted small" }, `training loss over ${curve[curve.length - 1][0]} steps: ${fixed(curve[0][1])} → ${fixed(curve[curve.length - 1][1])}`));
}

async function openManifest(version) {
  const dialog = $("#manifest-dialog");
  const body = $("#manifest-body");
  $("#manifest-title").textContent = `Manifest of ${version.model}`;
  clear(body, h("p", { class: "muted" }, "Loading…"));
  dialog.showModal();
  let view;
  try {
    view = await api(`/v1/adapters/${encodeURIComponent(version.model)}/manifest`);
  } catch (err) {
    clear(body, h("p", { class: "form-error" }, err.message));
    return;
  }
  const m = view.manifest;
  const files = m?.dataset?.files || [];
  clear(
    body,
    h("p", { class: "muted small" }, breakable(view.path)),
    !m
      ? h("p", { class: "note" }, view.error)
      : [
          h("h3", {}, "Base model"),
          kv({ name: m.base_model.name, config_sha256: m.base_model.config_sha256 }),
          h("h3", {}, "Adapter"),
          kv({ type: m.adapter.type, rank: m.adapter.r, alpha: m.adapter.alpha, dropout: m.adapter.dropout, target_modules: m.adapter.target_modules, task: m.task, created_at: m.created_at }),
          h("h3", {}, "Training data"),
          files.length
            ? table(
                [
                  { label: "File", render: (f) => breakable(f.path) },
                  { label: "Type", render: (f) => f.type || "—" },
                  { label: "Samples", render: (f) => String(f.samples ?? "—"), class: "num" },
                  { label: "sha256", render: (f) => h("code", { class: "hash", title: f.sha256 }, (f.sha256 || "").slice(0, 16)) },
                ],
                files,
              )
            : null,
          kv(m.dataset, { skip: ["files"] }),
          h("h3", {}, "Metrics"),
          loss(m.metrics),
          kv(m.metrics, { skip: ["loss_curve"] }),
          h("h3", {}, "Hyperparameters"),
          kv(m.hyperparameters),
          Object.keys(m.library_versions || {}).length ? [h("h3", {}, "Library versions"), kv(m.library_versions)] : null,
        ],
  );
}

async function deleteVersion(version) {
  const aliases = aliasesOf(version.model);
  $("#delete-title").textContent = `Delete ${version.model}`;
  $("#delete-text").textContent =
    `${version.model} is unloaded from every replica once its in-flight requests finish.` +
    (aliases.length ? ` Aliases pointing at it: ${aliases.join(", ")}.` : "");
  $("#delete-force-row").hidden = !aliases.length;
  $("#delete-force").checked = false;
  if (!(await confirmDialog($("#delete-dialog")))) return;
  try {
    const result = await api(`/v1/adapters/${encodeURIComponent(version.model)}${$("#delete-force").checked ? "?force=true" : ""}`, { method: "DELETE" });
    toast(`Deleted ${result.deleted.join(", ")}${result.removed_aliases.length ? ` and aliases ${result.removed_aliases.join(", ")}` : ""}.`, "ok");
  } catch (err) {
    toast(err.message, "error");
  }
  await load();
}

function editAlias(alias) {
  $("#alias-form-title").textContent = `Edit alias ${alias.alias}`;
  $("#alias-name").value = alias.alias;
  $("#alias-target").value = aliasTargets(alias)[0].target;
  $("#alias-collection").value = alias.default_collection || "";
  $("#alias-target").focus();
}

async function deleteAlias(alias) {
  $("#delete-title").textContent = `Delete alias ${alias.alias}`;
  $("#delete-text").textContent = `Requests to ${alias.alias} will fail with 404 until it is set again.`;
  $("#delete-force-row").hidden = true;
  if (!(await confirmDialog($("#delete-dialog")))) return;
  try {
    await api(`/v1/aliases/${encodeURIComponent(alias.alias)}`, { method: "DELETE" });
    toast(`Deleted alias ${alias.alias}.`, "ok");
  } catch (err) {
    toast(err.message, "error");
  }
  await load();
}

function validateAlias(name, target) {
  if (!NAME_RE.test(name)) return { message: "Alias names start with a letter or digit and use letters, digits, . _ - (up to 64).", param: "alias" };
  if (name === state.baseModel || state.adapters.some((a) => a.name === name)) return { message: `${name} is already a model or adapter name.`, param: "alias" };
  if (!target) return { message: "Choose the version the alias points at.", param: "target" };
  return null;
}

async function load() {
  const [adapters, aliases, collections, models] = await Promise.all([
    api("/v1/adapters"),
    api("/v1/aliases"),
    api("/v1/collections").catch(() => ({ data: [] })),
    api("/v1/models"),
  ]);
  state.adapters = adapters.data;
  state.aliases = aliases.data;
  state.collections = collections.data;
  state.baseModel = models.data[0]?.id;
  if (state.principal.admin) state.sources = await api("/v1/adapter-roots").catch(() => null);
  renderAdapters();
  renderAliases();
  renderSelects();
  renderSources();
  if (state.history) await showHistory(state.history);
}

boot(async ({ principal }) => {
  state.principal = principal;
  wireCloseButtons();
  $("#refresh").addEventListener("click", load);

  $("#register-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const error = $("#register-error");
    const name = $("#reg-name").value.trim();
    const path = $("#reg-path").value.trim();
    if (!path) return showError(error, { message: "Choose an adapter directory.", param: "path" });
    if (!NAME_RE.test(name)) return showError(error, { message: "Names start with a letter or digit and use letters, digits, . _ - (up to 64).", param: "name" });
    const body = { name, path };
    const version = $("#reg-version").value;
    if (version) body.version = Number(version);
    const aliases = $("#reg-aliases").value.split(",").map((s) => s.trim()).filter(Boolean);
    const bad = aliases.find((a) => !NAME_RE.test(a));
    if (bad) return showError(error, { message: `Alias ${bad} is not a valid name.`, param: "aliases" });
    if (aliases.length) body.aliases = aliases;
    if ($("#reg-collection").value) body.default_collection = $("#reg-collection").value;
    showError(error, null);
    const button = form.querySelector("[type=submit]");
    button.disabled = true;
    button.textContent = "Loading on replicas…";
    try {
      const created = await api("/v1/adapters", { method: "POST", json: body });
      const loaded = created.replicas.filter((r) => r.state === "loaded").length;
      toast(`Registered ${created.model}: loaded on ${loaded} of ${created.replicas.length} replica${created.replicas.length === 1 ? "" : "s"}.`, "ok");
      form.reset();
      await load();
    } catch (err) {
      showError(error, err);
    } finally {
      button.disabled = false;
      button.textContent = "Register and load";
    }
  });

  $("#alias-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = $("#alias-error");
    const alias = $("#alias-name").value.trim();
    const target = $("#alias-target").value;
    const invalid = validateAlias(alias, target);
    if (invalid) return showError(error, invalid);
    showError(error, null);
    const body = { target };
    if ($("#alias-collection").value) body.default_collection = $("#alias-collection").value;
    try {
      const saved = await api(`/v1/aliases/${encodeURIComponent(alias)}`, { method: "PUT", json: body });
      toast(`${saved.alias} → ${saved.target}`, "ok");
      event.target.reset();
      $("#alias-form-title").textContent = "Set an alias";
      await load();
    } catch (err) {
      showError(error, err);
    }
  });

  await load();
});
