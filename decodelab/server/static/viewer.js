// decodelab token viewer: streams a generation over SSE and colours each token by a score.
// Plain JS, no build step. Talks to the same server's OpenAI-compatible API with records: true.
"use strict";

const $ = (id) => document.getElementById(id);
const SOURCE_COLOURS = { target: "#e4e7eb", draft: "#b7e4c7", bonus: "#a5d8ff", correction: "#ffd8a8" };
let tokens = [];        // records received so far, in order
let controller = null;  // AbortController of the running request

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

async function loadInfo() {
  $("api-key").value = localStorage.getItem("decodelab-api-key") || "";
  try {
    const response = await fetch("/v1/decodelab/info", { headers: headers() });
    if (!response.ok) throw new Error((await response.json()).error.message);
    const info = await response.json();
    $("model").replaceChildren(...info.models.map((m) => new Option(m, m)));
    for (const name of info.speculative_methods) $("method").append(new Option(name, name));
    $("max_tokens").title = "at most " + info.max_tokens_limit + " on this server";
  } catch (err) {
    showError("could not read the server's models: " + err.message);
  }
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function number(id) {
  const v = $(id).value.trim();
  return v === "" ? undefined : Number(v);
}

function requestBody() {
  const body = { model: $("model").value || undefined, stream: true, records: true, max_tokens: number("max_tokens") };
  for (const id of ["temperature", "top_p", "top_k", "min_p", "seed"]) {
    const v = number(id);
    if (v !== undefined) body[id] = v;
  }
  const scores = $("scores").value.trim();
  if (scores) body.scores = scores;
  const method = $("method").value;
  if (method) {
    body.speculative = method;
    const opts = $("method-options").value.trim();
    if (opts) body.speculative_options = JSON.parse(opts);
  }
  const prompt = $("prompt").value;
  if ($("endpoint").value === "chat") {
    body.messages = [{ role: "user", content: prompt }];
    body.logprobs = true;
    body.top_logprobs = 5;
    return ["/v1/chat/completions", body];
  }
  body.prompt = prompt;
  body.logprobs = 5;
  return ["/v1/completions", body];
}

// ---------------------------------------------------------------- colouring
function score(record) {
  const mode = $("colour").value;
  if (mode === "probability") return Math.exp(record.logprob);
  if (mode === "entropy") return record.entropy;
  return record.source;
}

// scores where a high value means the model is sure (green when high)
const CONFIDENT_WHEN_HIGH = new Set(["logprob", "max_prob", "margin", "ccp"]);

function extraColour(record, name) {
  const values = tokens.map((t) => (t.extra || {})[name]).filter((v) => Number.isFinite(v));
  const v = (record.extra || {})[name];
  if (!Number.isFinite(v) || !values.length) return "#eee";
  const low = Math.min(...values), high = Math.max(...values);
  let level = high > low ? (v - low) / (high - low) : 0.5;
  if (!CONFIDENT_WHEN_HIGH.has(name)) level = 1 - level;  // uncertainty scores: high = red
  return `hsl(${Math.round(120 * level)}, 75%, 78%)`;
}

function addScoreOptions(record) {
  for (const name of Object.keys(record.extra || {})) {
    const value = "extra:" + name;
    if (![...$("colour").options].some((o) => o.value === value)) $("colour").add(new Option("score: " + name, value));
  }
}

function colour(record) {
  const mode = $("colour").value;
  if (mode.startsWith("extra:")) return extraColour(record, mode.slice(6));
  if (mode === "source") return SOURCE_COLOURS[record.source] || "#fff3bf";
  if (mode === "probability") {
    const p = Math.exp(record.logprob);           // red (unlikely) -> green (likely)
    return `hsl(${Math.round(120 * p)}, 75%, 78%)`;
  }
  const maxEntropy = Math.max(1, ...tokens.map((t) => t.entropy));
  const e = Math.min(1, record.entropy / maxEntropy);  // pale -> deep violet with uncertainty
  return `hsl(265, ${Math.round(30 + 60 * e)}%, ${Math.round(92 - 30 * e)}%)`;
}

function legend() {
  const mode = $("colour").value;
  let html;
  if (mode.startsWith("extra:")) {
    const name = mode.slice(6);
    const [bad, good] = CONFIDENT_WHEN_HIGH.has(name) ? ["low", "high"] : ["high", "low"];
    html = `<span class="swatch" style="background:hsl(0,75%,78%)">${name} ${bad} (unsure)</span>` +
           `<span class="swatch" style="background:hsl(120,75%,78%)">${name} ${good} (sure)</span>`;
  } else if (mode === "source") {
    html = Object.entries(SOURCE_COLOURS).map(([k, c]) => `<span class="swatch" style="background:${c}">${k}</span>`).join("");
  } else if (mode === "probability") {
    html = [0, 0.25, 0.5, 0.75, 1].map((p) => `<span class="swatch" style="background:hsl(${120 * p},75%,78%)">p=${p}</span>`).join("");
  } else {
    html = '<span class="swatch" style="background:hsl(265,30%,92%)">low entropy</span>' +
           '<span class="swatch" style="background:hsl(265,90%,62%)">high entropy</span>';
  }
  $("legend").innerHTML = "Colour by " + mode + ": " + html;
}

function visible(text) {
  return text.replace(/\n/g, "\u21b5\n");
}

function addToken(record) {
  const index = tokens.push(record) - 1;
  addScoreOptions(record);
  const span = document.createElement("span");
  span.className = "tok";
  span.dataset.index = index;
  span.dataset.source = record.source;
  span.textContent = visible(record.text);
  span.style.background = colour(record);
  $("output").append(span);
}

function recolour() {
  legend();
  for (const span of $("output").querySelectorAll(".tok")) span.style.background = colour(tokens[span.dataset.index]);
}

// ---------------------------------------------------------------- tooltip
function escapeHtml(text) {
  return text.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
}

function showTooltip(event) {
  const span = event.target.closest(".tok");
  if (!span) return;
  const r = tokens[span.dataset.index];
  const rows = (r.top || []).map(([id, text, lp]) =>
    `<tr class="${id === r.token_id ? "chosen" : ""}"><td>${escapeHtml(JSON.stringify(text))}</td>` +
    `<td class="p">${(100 * Math.exp(lp)).toFixed(2)}%</td></tr>`).join("");
  const tip = $("tooltip");
  const extra = Object.entries(r.extra || {}).map(([k, v]) => `${escapeHtml(k)} = ${Number(v).toFixed(4)}`).join(", ");
  tip.innerHTML = `<b>${escapeHtml(JSON.stringify(r.text))}</b> (id ${r.token_id})<br>` +
    `p = ${(100 * Math.exp(r.logprob)).toFixed(2)}%, entropy = ${r.entropy.toFixed(3)} nats, source = ${r.source}` +
    (extra ? `<br>${extra}` : "") +
    (rows ? `<table><tr><td colspan="2">top alternatives</td></tr>${rows}</table>` : "");
  const box = span.getBoundingClientRect();
  tip.style.left = Math.min(box.left, window.innerWidth - 320) + "px";
  tip.style.top = box.bottom + 6 + "px";
  tip.hidden = false;
}

function hideTooltip(event) {
  if (event.target.closest(".tok")) $("tooltip").hidden = true;
}

// ---------------------------------------------------------------- streaming
function showStats(all) {
  const s = all[0] && all[0].stats;
  if (!s) return;
  let text = `${s.new_tokens} tokens, ${s.tokens_per_second.toFixed(1)} tokens/s, ${s.target_forwards} target forwards`;
  if (s.proposed) text += `, acceptance ${(100 * s.acceptance_rate).toFixed(1)}%, mean accepted length ${s.mean_accepted_length.toFixed(2)}`;
  $("stats").textContent = text;
}

async function generate(event) {
  event.preventDefault();
  showError("");
  localStorage.setItem("decodelab-api-key", $("api-key").value.trim());
  let path, body;
  try {
    [path, body] = requestBody();
  } catch (err) {
    showError("method options must be JSON: " + err.message);
    return;
  }
  tokens = [];
  $("output").replaceChildren();
  $("stats").textContent = "";
  controller = new AbortController();
  $("go").disabled = true;
  $("stop").disabled = false;
  try {
    const response = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal });
    if (!response.ok) {
      const err = await response.json().catch(() => ({ error: { message: response.statusText } }));
      showError(`${response.status}: ${err.error.message}`);
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) { showError(chunk.error.message); continue; }
          if (chunk.object === "decodelab.stats") { showStats(chunk.choices); continue; }
          for (const choice of chunk.choices || []) for (const r of choice.records || []) addToken(r);
        }
      }
    }
  } catch (err) {
    if (err.name !== "AbortError") showError(err.message);
  } finally {
    $("go").disabled = false;
    $("stop").disabled = true;
    controller = null;
  }
}

// ---------------------------------------------------------------- attribution heatmap
function heat(value, max) {
  const level = max > 0 ? Math.max(0, value) / max : 0;  // white -> deep orange with importance
  return `hsl(28, ${Math.round(20 + 75 * level)}%, ${Math.round(97 - 42 * level)}%)`;
}

function showAttribution(a) {
  if (!a || !Array.isArray(a.importance) || !Array.isArray(a.prompt_tokens) || !Array.isArray(a.output_tokens)) {
    throw new Error("not an attribution (expected importance, prompt_tokens, output_tokens)");
  }
  const shown = a.positions || a.prompt_tokens.map((_, i) => i);
  const max = Math.max(0, ...a.importance.flat());
  const head = "<tr><th></th>" + shown.map((i) => `<th>${escapeHtml(visible(a.prompt_tokens[i]))}</th>`).join("") + "</tr>";
  const rows = a.output_tokens.map((t, r) => `<tr><th>${escapeHtml(visible(t))}</th>` + shown.map((i) => {
    const v = a.importance[r][i];
    return `<td class="cell" title="${v.toFixed(4)}" style="background:${heat(v, max)}"></td>`;
  }).join("") + "</tr>").join("");
  const mean = a.prompt_importance || shown.map((i) => a.importance.reduce((s, row) => s + row[i], 0) / a.importance.length);
  const meanMax = Math.max(0, ...shown.map((i) => mean[i]));
  const prompt = shown.map((i) => `<span class="tok" style="background:${heat(mean[i], meanMax)}">${escapeHtml(visible(a.prompt_tokens[i]))}</span>`).join("");
  $("attribution").innerHTML = `<div class="prompt-heat">${prompt}</div>` +
    `<table class="heatmap"><caption>importance of each prompt token (columns) for each generated token (rows)</caption>${head}${rows}</table>`;
}

$("attribution-file").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  try {
    showError("");
    showAttribution(JSON.parse(await file.text()));
  } catch (err) {
    showError("attribution: " + err.message);
  }
});

$("form").addEventListener("submit", generate);
$("stop").addEventListener("click", () => controller && controller.abort());
$("colour").addEventListener("change", recolour);
$("output").addEventListener("mouseover", showTooltip);
$("output").addEventListener("mouseout", hideTooltip);
legend();
loadInfo();
