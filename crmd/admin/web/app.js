// The dashboard's behaviour: refresh the panels from /api/status every few seconds and send the
// manual sync and retry requests with the admin token (kept in sessionStorage, this tab only).
// Plain JavaScript, no build step; the panels mirror crmd/admin/web/__init__.py's server rendering.
"use strict";

const REFRESH_MS = 5000;
const TOKEN_KEY = "crmd-admin-token";
const ENTITIES = { clientes: "Clientes", produtos: "Produtos", vendas: "Vendas", atividades: "Atividades" };
const TIMERS = { cleanup: "Limpeza", full_sync: "Sincronização completa" };
const WINDOWS = { 1: "por segundo", 60: "por minuto", 3600: "por hora", 86400: "por dia" };

const $ = (id) => document.getElementById(id);

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function when(iso) {
  if (!iso) return "—";
  return new Date(iso).toLocaleString("pt-BR");
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "nenhum";
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1).replace(".", ",")} h`;
  return `${(seconds / 86400).toFixed(1).replace(".", ",")} dias`;
}

function card(label, value, field, warn) {
  return `<div class="card${warn ? " alerta" : ""}"><span class="rotulo">${esc(label)}</span>` +
    `<span class="valor" data-field="${field}">${esc(value)}</span></div>`;
}

function renderCards(r) {
  const q = r.queue;
  const rate = r.last_24h.success_rate;
  const pct = rate === null ? "—" : `${(rate * 100).toFixed(1).replace(".", ",")}%`;
  return [
    card("Pendentes", q.pending_total, "pending_total"),
    card("Em processamento", q.in_flight_total, "in_flight_total"),
    card("Falhas", q.failed_total, "failed_total", q.failed_total > 0),
    card("Sucesso (24 h)", pct, "success_rate", rate !== null && rate < 0.9),
    card("Enviados na última hora", r.last_hour.succeeded, "last_hour"),
    card("Pendente mais antigo", age(q.oldest_pending_age_seconds), "oldest"),
  ].join("");
}

function renderQueue(q) {
  const rows = Object.entries(ENTITIES).map(([e, label]) =>
    `<tr><th scope=row>${label}</th><td>${q.pending[e]}</td><td>${q.in_flight[e]}</td>` +
    `<td>${q.failed[e]}</td></tr>`).join("");
  return "<table><thead><tr><th>Entidade</th><th>Pendentes</th><th>Processando</th>" +
    `<th>Falhas</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function renderAccounts(items) {
  if (!items || !items.length) {
    return '<p class="vazio">Nenhuma conta conhecida (o daemon informa as contas).</p>';
  }
  return items.map((a) => {
    const state = a.paused
      ? `<span class="pausada">Pausada até ${esc(when(a.paused_until))}: ${esc(a.reason)}</span>`
      : '<span class="ativa">Ativa</span>';
    const meters = a.limits.map((l) =>
      `<div class="uso"><span>${WINDOWS[l.per_seconds] || `em ${l.per_seconds} s`}: ${l.used} de ` +
      `${l.requests}</span><meter min="0" max="${l.requests}" value="${l.used}"></meter></div>`
    ).join("");
    return `<div class="conta"><h3>${esc(a.name)} ${state}</h3>${meters}</div>`;
  }).join("");
}

function renderTimers(items) {
  if (!items || !items.length) return '<p class="vazio">Nenhum agendamento conhecido.</p>';
  const rows = items.map((t) =>
    `<tr><th scope=row>${esc(TIMERS[t.name] || t.name)}</th>` +
    `<td>${esc(t.last_run ? when(t.last_run) : "nunca")}</td><td>${esc(when(t.next_run))}</td></tr>`
  ).join("");
  return "<table><thead><tr><th>Agendamento</th><th>Última execução</th>" +
    `<th>Próxima execução</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function renderErrors(items) {
  if (!items.length) return '<p class="vazio">Nenhum erro recente.</p>';
  const rows = items.map((e) =>
    `<tr><td>${esc(when(e.criado_em))}</td>` +
    `<td>${esc(ENTITIES[e.entidade] || e.entidade)} ${esc(e.entidade_id)} (loja ${esc(e.loja_id)})</td>` +
    `<td>${e.http_status ? `HTTP ${esc(e.http_status)}: ` : ""}${esc(e.mensagem)}</td></tr>`
  ).join("");
  return "<table><thead><tr><th>Quando</th><th>Registro</th><th>Mensagem</th></tr></thead>" +
    `<tbody>${rows}</tbody></table>`;
}

function renderUncertain(items) {
  const rows = (items || []).map((u) =>
    `<tr><td>${esc(ENTITIES[u.entidade] || u.entidade)} ${esc(u.entidade_id)}</td>` +
    `<td>${esc(u.conta)}</td><td>${esc(u.chave || "—")}</td><td>${esc(when(u.since))}</td></tr>`
  ).join("");
  return "<table><thead><tr><th>Registro</th><th>Conta</th><th>Chave</th><th>Desde</th></tr>" +
    `</thead><tbody>${rows}</tbody></table>`;
}

async function refresh() {
  try {
    const resp = await fetch("/api/status", { cache: "no-store" });
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    const r = await resp.json();
    $("cards").innerHTML = renderCards(r);
    $("fila").innerHTML = renderQueue(r.queue);
    $("contas").innerHTML = renderAccounts(r.accounts);
    $("agendamentos").innerHTML = renderTimers(r.timers);
    $("erros").innerHTML = renderErrors(r.recent_errors);
    $("incertas").innerHTML = renderUncertain(r.uncertain_creates);
    $("incertas-secao").hidden = !(r.uncertain_creates || []).length;
    $("atualizado").textContent = when(r.generated_at);
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
    refresh();
  } catch (err) {
    say(err.message, "erro");
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

function describeSync(d) {
  const lines = Object.entries(d.per_loja).map(([loja, n]) => `Loja ${loja}: ${n} ${d.entidade} encontrados`);
  lines.push(`Total enfileirado: ${d.total}`);
  return lines.join("\n");
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-sync]").forEach((button) => {
    const entidade = button.dataset.sync;
    button.addEventListener("click", () =>
      act(button, `Enfileirando ${entidade}…`, () => post(`/api/sync/${entidade}`, {}), describeSync));
  });
  document.querySelector("[data-retry]").addEventListener("click", (ev) =>
    act(ev.currentTarget, "Reenviando falhas…", () => post("/api/retry", { all_failed: true }),
      (d) => `${d.retried} itens com falha voltaram para a fila`));
  $("esquecer-token").hidden = !sessionStorage.getItem(TOKEN_KEY);
  $("esquecer-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $("esquecer-token").hidden = true;
    say("Token esquecido nesta aba.");
  });
  refresh();
  setInterval(refresh, REFRESH_MS);
});
