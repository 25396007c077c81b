// What several pages need to know about the API's shapes: the models a request may name, what each resolves to,
// and where a collection keeps its tuning result.

import { api } from "./api.js";
import { h } from "./dom.js";

const STOPWORDS = new Set(
  "a an and are as at be by can do does did for from has have how i in is it its my of on or our that the this to was we what when where which who why will with you your".split(" "),
);

// Retrieval stores the result of POST /v1/collections/{c}/tune with the collection; shown when present.
const TUNING_KEYS = ["tuning", "tuned", "tuning_result"];

export function tuningOf(collection) {
  for (const key of TUNING_KEYS) if (collection && collection[key]) return collection[key];
  return null;
}

// Everything a request's `model` may be: the base model, adapter names (latest version), pinned versions, aliases.
export async function modelCatalog() {
  const [models, adapters, aliases] = await Promise.all([api("/v1/models"), api("/v1/adapters"), api("/v1/aliases")]);
  const base = models.data[0]?.id ?? null;
  const versions = adapters.data;
  const names = [...new Set(versions.map((v) => v.name))].sort();
  return {
    base,
    ids: models.data.map((m) => m.id),
    names,
    versions,
    aliases: aliases.data,
    latest(name) {
      return versions.find((v) => v.name === name && v.latest)?.model ?? null;
    },
    // The concrete version a request to `model` goes to now (the gateway's answer overrides it when it names one).
    resolve(model) {
      if (model === base) return base;
      const alias = aliases.data.find((a) => a.alias === model);
      if (alias) {
        const targets = Array.isArray(alias.targets) ? alias.targets : [{ target: alias.target, weight: 100 }];
        return targets.length === 1 ? targets[0].target ?? targets[0].model : null;
      }
      if (model.includes("@")) return model;
      return this.latest(model);
    },
  };
}

// The words of a query worth marking in a passage (stopwords dropped, simple suffixes stripped).
export function queryTerms(query) {
  return [...new Set(query.toLowerCase().match(/[\p{L}\p{N}]+/gu) || [])]
    .filter((t) => t.length > 1 && !STOPWORDS.has(t))
    .map((t) => (t.length > 4 ? t.replace(/(ing|ed|es|s)$/u, "") : t));
}

// Text with every word that starts with a query term wrapped in <mark>.
export function highlighted(text, terms) {
  if (!terms.length) return [text];
  const escaped = terms.map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  const re = new RegExp(`(?<![\\p{L}\\p{N}])(?:${escaped.join("|")})[\\p{L}\\p{N}]*`, "giu");
  const out = [];
  let last = 0;
  for (const match of text.matchAll(re)) {
    if (match.index > last) out.push(text.slice(last, match.index));
    out.push(h("mark", {}, match[0]));
    last = match.index + match[0].length;
  }
  out.push(text.slice(last));
  return out;
}
