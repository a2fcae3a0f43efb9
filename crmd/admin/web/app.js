// The dashboard's behaviour: refresh the panels from /api/status every few seconds and send the
// manual sync and retry requests with the admin token (kept in sessionStorage, this tab only).
// Plain JavaScript, no build step; the panels mirror crmd/admin/web/__init__.py's server rendering.
"use strict";

const REFRESH_MS = 5000;
const CHART_MS = 60000;
const TOKEN_KEY = "crmd-admin-token";
const ENTITIES = { clientes: "Clientes", produtos: "Produtos", vendas: "Vendas", atividades: "Atividades" };
const TIMERS = { cleanup: "Limpeza", full_sync: "Sincronização completa" };
const WINDOWS = { 1: "por segundo", 60: "por minuto", 3600: "por hora", 86400: "por dia" };

const $ = (id) => document.getElementById(id);

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// --- pt-BR, as crmd/ptbr.py says it (the server's first paint and these refreshes agree) ---

const NOUNS = {
  clientes: ["cliente", "clientes"], produtos: ["produto", "produtos"], vendas: ["venda", "vendas"],
  atividades: ["atividade", "atividades"], itens: ["item", "itens"], lojas: ["loja", "lojas"],
  tentativas: ["tentativa", "tentativas"], erros: ["erro", "erros"],
  "requisições": ["requisição", "requisições"], dias: ["dia", "dias"],
};

function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function number(value, decimals = 0) {
  const fixed = Number(value).toFixed(decimals);
  const [whole, frac] = fixed.split(".");
  const sign = whole.startsWith("-") ? "-" : "";
  const grouped = whole.replace("-", "").replace(/\B(?=(\d{3})+(?!\d))/g, ".");
  return sign + grouped + (frac ? `,${frac}` : "");
}

function percent(fraction) {
  return fraction === null || fraction === undefined ? "—" : `${number(fraction * 100, 1)} %`;
}

function count(n, word) {
  const [one, many] = NOUNS[word] || [word, word];
  return `${number(n)} ${n === 1 ? one : many}`;
}

function duration(seconds) {
  const total = Math.max(roundHalfEven(seconds), 0);
  if (total < 120) return `${total} s`;
  let minutes = roundHalfEven(total / 60);
  if (minutes < 60) return `${minutes} min`;
  let hours = Math.floor(minutes / 60);
  minutes %= 60;
  if (hours < 48) return minutes ? `${hours} h ${minutes} min` : `${hours} h`;
  const days = Math.floor(hours / 24);
  hours %= 24;
  return hours ? `${count(days, "dias")} ${hours} h` : count(days, "dias");
}

function zoneLabel(minutes) {
  if (minutes === 0) return "UTC";
  const sign = minutes > 0 ? "+" : "-";
  const abs = Math.abs(minutes);
  const h = String(Math.floor(abs / 60)).padStart(2, "0");
  const m = abs % 60;
  return `UTC${sign}${h}${m ? `:${String(m).padStart(2, "0")}` : ""}`;
}

// A time in the report's zone, never the browser's: "14/03/2025 09:05:09 UTC-03".
function moment(iso, tz) {
  if (!iso) return "—";
  const date = new Date(iso);
  const at = Math.floor(date.getTime() / 1000) * 1000;
  const p = {};
  const format = new Intl.DateTimeFormat("en-GB", {
    timeZone: tz || "UTC", year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
  });
  for (const part of format.formatToParts(new Date(at))) p[part.type] = part.value;
  const local = Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour, +p.minute, +p.second);
  const offset = Math.round((local - at) / 60000);
  return `${p.day}/${p.month}/${p.year} ${p.hour}:${p.minute}:${p.second} ${zoneLabel(offset)}`;
}

function age(seconds) {
  return seconds === null || seconds === undefined ? "nenhum" : duration(seconds);
}

function drainText(seconds, pending) {
  if (pending <= 0) return "fila vazia";
  if (seconds === null || seconds === undefined) return "sem envios nos últimos 10 min para estimar";
  return `fila esvazia em ~${duration(seconds)}`;
}

function overallDrain(r) {
  const pending = r.queue.pending_total + r.queue.in_flight_total;
  if (!r.accounts) return pending === 0 ? "fila vazia" : "—";
  const estimates = r.accounts.filter((a) => a.pending).map((a) => a.drain_seconds);
  if (pending === 0 || !estimates.length) return pending === 0 ? drainText(0, 0) : "—";
  if (estimates.some((e) => e === null)) return drainText(null, pending);
  return drainText(Math.max(...estimates), pending);
}

function recordUrl(entidade, id) {
  return `/registro/${encodeURIComponent(entidade)}/${encodeURIComponent(id)}`;
}

// --- the panels, as crmd/admin/web/__init__.py renders them ---

function card(label, value, field, warn) {
  return `<div class="card${warn ? " alerta" : ""}"><span class="rotulo">${esc(label)}</span>` +
    `<span class="valor" data-field="${field}">${esc(value)}</span></div>`;
}

function renderCards(r) {
  const q = r.queue;
  const rate = r.last_24h.success_rate;
  return [
    card("Pendentes", number(q.pending_total), "pending_total"),
    card("Em processamento", number(q.in_flight_total), "in_flight_total"),
    card("Falhas", number(q.failed_total), "failed_total", q.failed_total > 0),
    card("Sucesso (24 h)", percent(rate), "success_rate", rate !== null && rate < 0.9),
    card("Processados hoje", number(r.processed_today), "processed_today"),
    card("Enviados na última hora", number(r.last_hour.succeeded), "last_hour"),
    card("Pendente mais antigo", age(q.oldest_pending_age_seconds), "oldest"),
    card("Previsão", overallDrain(r), "drain"),
  ].join("");
}

function renderQueue(q) {
  const rows = Object.entries(ENTITIES).map(([e, label]) =>
    `<tr><th scope=row>${label}</th><td>${number(q.pending[e])}</td>` +
    `<td>${number(q.in_flight[e])}</td><td>${number(q.failed[e])}</td></tr>`).join("");
  const total = `<tr class=total><th scope=row>Total</th><td>${number(q.pending_total)}</td>` +
    `<td>${number(q.in_flight_total)}</td><td>${number(q.failed_total)}</td></tr>`;
  return '<table class="fila"><thead><tr><th>Entidade</th><th>Pendentes</th>' +
    `<th>Em proc.</th><th>Falhas</th></tr></thead><tbody>${rows}${total}</tbody></table>`;
}

function renderAccounts(items, tz) {
  if (!items || !items.length) {
    return '<p class="vazio">Nenhuma conta conhecida (o daemon informa as contas).</p>';
  }
  return items.map((a) => {
    const state = a.paused
      ? `<span class="pausada">Pausada até ${esc(moment(a.paused_until, tz))}: ${esc(a.reason)}</span>`
      : '<span class="ativa">Ativa</span>';
    const meters = a.limits.map((l) =>
      `<div class="uso"><span>${WINDOWS[l.per_seconds] || `em ${number(l.per_seconds)} s`}: ` +
      `${number(l.used)} de ${number(l.requests)}</span>` +
      `<meter min="0" max="${l.requests}" value="${l.used}"></meter></div>`
    ).join("");
    const pace = `<p class="previsao" data-conta="${esc(a.name)}">` +
      `${esc(drainText(a.drain_seconds, a.pending))} (${count(a.pending, "itens")}; ` +
      `${number(a.requests_per_minute, 1)} requisições/min nos últimos 10 min)</p>`;
    return `<div class="conta"><h3>${esc(a.name)} ${state}</h3>${pace}${meters}</div>`;
  }).join("");
}

function renderTimers(items, tz) {
  if (!items || !items.length) return '<p class="vazio">Nenhum agendamento conhecido.</p>';
  const rows = items.map((t) =>
    `<tr><th scope=row>${esc(TIMERS[t.name] || t.name)}</th>` +
    `<td>${esc(t.last_run ? moment(t.last_run, tz) : "nunca")}</td>` +
    `<td>${esc(moment(t.next_run, tz))}</td></tr>`
  ).join("");
  return "<table><thead><tr><th>Agendamento</th><th>Última execução</th>" +
    `<th>Próxima execução</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function renderErrors(items, tz) {
  if (!items.length) return '<p class="vazio">Nenhum erro recente.</p>';
  const rows = items.map((e) =>
    `<tr><td>${esc(moment(e.criado_em, tz))}</td>` +
    `<td><a href="${recordUrl(e.entidade, e.entidade_id)}">` +
    `${esc(ENTITIES[e.entidade] || e.entidade)} ${esc(e.entidade_id)}</a> (loja ${esc(e.loja_id)})</td>` +
    `<td>${e.http_status ? `HTTP ${esc(e.http_status)}: ` : ""}${esc(e.mensagem)}</td></tr>`
  ).join("");
  return "<table><thead><tr><th>Quando</th><th>Registro</th><th>Mensagem</th></tr></thead>" +
    `<tbody>${rows}</tbody></table>`;
}

function renderUncertain(items, tz) {
  const rows = (items || []).map((u) =>
    `<tr><td><a href="${recordUrl(u.entidade, u.entidade_id)}">` +
    `${esc(ENTITIES[u.entidade] || u.entidade)} ${esc(u.entidade_id)}</a></td>` +
    `<td>${esc(u.conta)}</td><td>${esc(u.chave || "—")}</td><td>${esc(moment(u.since, tz))}</td></tr>`
  ).join("");
  return "<table><thead><tr><th>Registro</th><th>Conta</th><th>Chave</th><th>Desde</th></tr>" +
    `</thead><tbody>${rows}</tbody></table>`;
}

function renderInstances(items, tz) {
  if (!items || !items.length) return '<p class="vazio">Nenhuma instância registrada.</p>';
  const rows = items.map((i) =>
    `<tr><td>${esc(i.host)}</td><td>${esc(i.pid)}</td><td>${esc(i.version)}</td>` +
    `<td>${esc(moment(i.started_at, tz))}</td>` +
    `<td>${i.alive ? "ativa" : "<strong>sem sinal</strong>"}, visto em ${esc(moment(i.seen_at, tz))}</td></tr>`
  ).join("");
  return "<table><thead><tr><th>Máquina</th><th>PID</th><th>Versão</th><th>Desde</th>" +
    `<th>Situação</th></tr></thead><tbody>${rows}</tbody></table>`;
}

async function refresh() {
  try {
    const resp = await fetch("/api/status", { cache: "no-store" });
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    const r = await resp.json();
    const tz = r.timezone;
    $("cards").innerHTML = renderCards(r);
    $("fila").innerHTML = renderQueue(r.queue);
    $("contas").innerHTML = renderAccounts(r.accounts, tz);
    $("agendamentos").innerHTML = renderTimers(r.timers, tz);
    $("erros").innerHTML = renderErrors(r.recent_errors, tz);
    $("incertas").innerHTML = renderUncertain(r.uncertain_creates, tz);
    $("instancias").innerHTML = renderInstances(r.instances, tz);
    $("incertas-secao").hidden = !(r.uncertain_creates || []).length;
    $("atualizado").textContent = moment(r.generated_at, tz);
    $("conexao").textContent = "";
    $("conexao").classList.remove("erro");
  } catch (err) {
    $("conexao").textContent = `· sem resposta do servidor (${err.message})`;
    $("conexao").classList.add("erro");
  }
}

function say(text, kind) {
  const box = $("mensagem");
  box.textContent = text;
  box.className = kind || "";
}

function askToken() {
  const dialog = $("token-dialogo");
  const field = $("token-campo");
  field.value = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok" && field.value ? field.value : null);
    }, { once: true });
    dialog.showModal();
    field.focus();
  });
}

// POST with the token; asks for it when there is none, forgets it when the server refuses it.
async function post(path, body) {
  let token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) {
    token = await askToken();
    if (!token) return null;
  }
  const resp = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
  });
  const data = await resp.json().catch(() => ({}));
  if (resp.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    $("esquecer-token").hidden = true;
    throw new Error("Token recusado pelo servidor. Tente de novo.");
  }
  if (!resp.ok) throw new Error(data.error || `Erro HTTP ${resp.status}`);
  sessionStorage.setItem(TOKEN_KEY, token);
  $("esquecer-token").hidden = false;
  return data;
}

async function act(button, busyText, request, describe) {
  const buttons = document.querySelectorAll("#acoes button");
  buttons.forEach((b) => { b.disabled = true; });
  say(busyText);
  try {
    const data = await request();
    if (data === null) say("Cancelado.");
    else say(describe(data), "ok");
    if (document.body.dataset.pagina !== "registro") refresh();
  } catch (err) {
    say(err.message, "erro");
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

function describeSync(d) {
  const [one, many] = NOUNS[d.entidade] || [d.entidade, d.entidade];
  const female = d.entidade === "vendas" || d.entidade === "atividades";
  const found = (n) => `${number(n)} ${n === 1 ? one : many} encontrad${female ? "a" : "o"}${n === 1 ? "" : "s"}`;
  const lines = Object.entries(d.per_loja).map(([loja, n]) => `Loja ${loja}: ${found(n)}`);
  lines.push(`Total enfileirado: ${number(d.total)}`);
  return lines.join("\n");
}

function describeRetry(d) {
  const n = d.retried;
  return n === 1 ? "1 item com falha voltou para a fila"
    : `${number(n)} itens com falha voltaram para a fila`;
}

async function refreshChart() {
  try {
    const resp = await fetch("/grafico", { cache: "no-store" });
    if (resp.ok) $("grafico").innerHTML = await resp.text();
  } catch (err) {
    // the next refresh tries again; the panels say when the server is away
  }
}

function setUpToken() {
  $("esquecer-token").hidden = !sessionStorage.getItem(TOKEN_KEY);
  $("esquecer-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $("esquecer-token").hidden = true;
    say("Token esquecido nesta aba.");
  });
}

function dashboard() {
  document.querySelectorAll("[data-sync]").forEach((button) => {
    const entidade = button.dataset.sync;
    button.addEventListener("click", () =>
      act(button, `Enfileirando ${entidade}…`, () => post(`/api/sync/${entidade}`, {}), describeSync));
  });
  document.querySelector("[data-retry]").addEventListener("click", (ev) =>
    act(ev.currentTarget, "Reenviando falhas…", () => post("/api/retry", { all_failed: true }),
      describeRetry));
  refresh();
  setInterval(refresh, REFRESH_MS);
  setInterval(refreshChart, CHART_MS);
}

function recordPage() {
  const { entidade, id } = document.body.dataset;
  $("reenviar").addEventListener("click", (ev) =>
    act(ev.currentTarget, "Enviando de novo…",
      () => post(`/api/history/${encodeURIComponent(entidade)}/${encodeURIComponent(id)}/resend`, {}),
      (d) => `${d.message[0].toUpperCase()}${d.message.slice(1)}.`));
}

document.addEventListener("DOMContentLoaded", () => {
  setUpToken();
  if (document.body.dataset.pagina === "registro") recordPage();
  else dashboard();
});
