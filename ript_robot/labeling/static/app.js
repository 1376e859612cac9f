// The tablet page: pair, then poll /api/state and draw it. Every write sends the CSRF token.
"use strict";

const $ = (id) => document.getElementById(id);
let csrf = null;
let state = null;
let selected = null; // episode id the operator tapped in the queue, if any
let lastLabel = null; // {episode_id, revision, what, until}: what the undo button withdraws
let busy = false;

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (csrf) headers["X-CSRF-Token"] = csrf;
  const response = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined,
                                       credentials: "same-origin" });
  let data = {};
  try { data = await response.json(); } catch (e) { data = {}; }
  return { status: response.status, data };
}

function show(paired) {
  $("pairing").hidden = paired;
  $("app").hidden = !paired;
}

async function start() {
  const { status, data } = await api("GET", "/api/session");
  if (status === 200) {
    csrf = data.csrf;
    show(true);
    poll();
  } else {
    show(false);
  }
}

$("pair-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const { status, data } = await api("POST", "/api/pair", { code: $("pair-code").value, name: $("pair-name").value });
  if (status === 200) {
    csrf = data.csrf;
    $("pair-error").textContent = "";
    show(true);
    poll();
  } else {
    $("pair-error").textContent = data.error || `pairing failed (${status})`;
  }
});

function notice(text) { $("notice").textContent = text; }

function describe(item) {
  const when = item.ended_at ? new Date(item.ended_at * 1000).toLocaleTimeString() : "";
  const training = item.training ? ` · ${item.training}` : "";
  const taken = item.interventions ? ` · taken over ${item.interventions}x` : "";
  return `${item.context_id} · policy v${item.policy_version} · ${item.steps} steps${taken} · ${item.end_reason}` +
    ` · ${when}${training}`;
}

function currentItem() {
  if (!state) return null;
  const byId = state.queue.find((item) => item.episode_id === selected);
  return byId || state.queue[0] || null;
}

function renderCurrent() {
  const item = currentItem();
  $("current-empty").hidden = !!item;
  $("current-episode").hidden = !item;
  if (!item) return;
  const holder = $("current-frames");
  if (holder.dataset.episode !== item.episode_id) {
    holder.dataset.episode = item.episode_id;
    holder.innerHTML = "";
    for (let i = 0; i < 4; i++) {
      const img = document.createElement("img");
      img.src = `/api/episodes/${encodeURIComponent(item.episode_id)}/frames/${i}.jpg`;
      img.alt = `frame ${i + 1}`;
      img.onerror = () => img.remove();
      holder.appendChild(img);
    }
  }
  $("current-episode").dataset.episode = item.episode_id;
  $("current-instruction").textContent = item.instruction;
  $("current-meta").textContent = describe(item);
  $("fault").hidden = !item.fault;
  $("fault").textContent = item.fault ? `Fault: ${item.end_reason}. Label it, or discard it if it says nothing ` +
    "about the policy" : "";
  const s = item.suggestion;
  $("suggestion").textContent = s
    ? `Detector suggests ${s.success ? "SUCCESS" : "FAILURE"} (${Math.round(s.probability * 100)}% success` +
      `${s.confident ? "" : ", not sure"})`
    : "";
}

function renderUndo() {
  const now = Date.now() / 1000;
  const active = lastLabel && now < lastLabel.until;
  $("undo-bar").hidden = !active;
  if (active) {
    const left = Math.ceil(lastLabel.until - now);
    $("undo-text").textContent = `${lastLabel.what} · undo (${left} s)`;
  }
}

function renderRobot() {
  const robot = state.robot;
  $("live").hidden = !state.live;
  const pill = $("robot-state");
  pill.textContent = robot ? robot.state : state.live ? "waiting for the robot" : "labels only";
  pill.className = "pill " + (robot ? robot.state : "");
  $("robot-message").textContent = robot ? robot.message : "";
  if (robot) {
    $("live-step").textContent = robot.step;
    $("live-version").textContent = robot.policy_version === null ? "–" : `v${robot.policy_version}`;
    $("live-context").textContent = robot.context ? robot.context.instruction : "";
    $("live-person").hidden = robot.control !== "person";  // a person commands the arm (teleoperation)
    $("live-interventions").textContent = robot.interventions || 0;
    $("stop").textContent = robot.software_stop ? "Release stop" : "STOP";
    $("start").disabled = robot.state !== "ready" || robot.software_stop;
  }
  const next = state.next_context;
  $("next").hidden = !next;
  if (next) {
    $("next-instruction").textContent = next.instruction;
    $("next-context").textContent = next.context_id;
    const img = $("next-reference");
    img.hidden = !next.reference;
    const src = `/api/contexts/${encodeURIComponent(next.context_id)}/reference.jpg`;
    if (next.reference && img.dataset.src !== src) { img.dataset.src = src; img.src = src; }
  }
}

function renderLists() {
  $("you").textContent = state.you;
  $("queue-count").textContent = `(${state.queue.length})`;
  const backlog = state.label_backlog;
  $("backlog").textContent = backlog.count
    ? `${backlog.count} rollout${backlog.count === 1 ? "" : "s"} wait for a label (the trainer waits on them), ` +
      `oldest ${Math.round(backlog.oldest_s / 60)} min`
    : "The trainer waits on no label.";
  $("corrections-card").hidden = !state.corrections.length;
  const corrections = $("corrections");
  corrections.innerHTML = "";
  for (const c of state.corrections) {
    const li = document.createElement("li");
    li.textContent = `${c.episode_id}: ${c.text}`;
    corrections.appendChild(li);
  }
  const queue = $("queue");
  queue.innerHTML = "";
  for (const item of state.queue) {
    const li = document.createElement("li");
    li.textContent = `${item.instruction} — ${describe(item)}`;
    li.dataset.episode = item.episode_id;
    li.onclick = () => { selected = item.episode_id; renderCurrent(); };
    queue.appendChild(li);
  }
  for (const item of state.recent) {
    if (!item.corrected) continue;
    const li = document.createElement("li");
    li.className = "corrected";
    li.textContent = `corrected: ${item.episode_id} is now ${item.label.success ? "success" : "failure"} (${item.label.labeler})`;
    queue.appendChild(li);
  }
  const progress = $("progress");
  progress.innerHTML = "";
  $("progress-version").textContent = state.progress.length ? `policy v${state.progress[0].policy_version}` : "";
  for (const p of state.progress) {
    const li = document.createElement("li");
    li.textContent = `${p.instruction} (${p.context_id}): ${p.done}/${p.k} done, ${p.labeled} labeled`;
    progress.appendChild(li);
  }
  const d = state.detector;
  $("detector").textContent = d
    ? `Detector (${d.mode}): agrees with operators on ${d.agree} of ${d.compared}` +
      (d.compared ? ` (${Math.round((100 * d.agree) / d.compared)}%)` : "") + ` · ${d.auto_labeled} labeled on its own`
    : "";
}

async function poll() {
  try {
    const { status, data } = await api("GET", "/api/state");
    if (status === 401) { csrf = null; show(false); return; }
    if (status === 200) {
      state = data;
      renderRobot();
      renderCurrent();
      renderLists();
      renderUndo();
      if (state.live) $("live-frame").src = `/api/live.jpg?t=${Date.now()}`;
    }
  } catch (e) {
    notice("lost the workstation: retrying…");
  }
  setTimeout(poll, state ? state.poll_ms || 500 : 500);
}

async function label(success) {
  const item = currentItem();
  if (!item || busy) return;
  const suggestion = item.suggestion ? item.suggestion.probability : null;
  await write(item, "label", { success, revision: item.revision, suggestion }, success ? "success" : "failure");
}

async function write(item, action, body, what) {
  busy = true;
  const { status, data } = await api("POST", `/api/episodes/${encodeURIComponent(item.episode_id)}/${action}`, body);
  busy = false;
  if (status === 200) {
    lastLabel = { episode_id: item.episode_id, revision: data.revision, what: `${what[0].toUpperCase()}${what.slice(1)}`,
                  until: Date.now() / 1000 + state.undo_window_s };
    notice(`Saved: ${what} for ${item.episode_id}`);
    state.queue = state.queue.filter((q) => q.episode_id !== item.episode_id);
    selected = null;
    renderCurrent();
    renderUndo();
  } else {
    notice(data.error || `not saved (${status})`);
  }
}

$("label-success").addEventListener("click", () => label(true));
$("label-failure").addEventListener("click", () => label(false));
$("discard").addEventListener("click", async () => {
  const item = currentItem();
  if (item && !busy) await write(item, "discard", { revision: item.revision }, "discarded");
});

$("undo").addEventListener("click", async () => {
  if (!lastLabel) return;
  const { status, data } = await api("POST", `/api/episodes/${encodeURIComponent(lastLabel.episode_id)}/undo`,
                                     { revision: lastLabel.revision });
  notice(status === 200 ? `Undone: ${lastLabel.episode_id} waits for a label again` : data.error || `not undone (${status})`);
  if (status === 200) selected = lastLabel.episode_id;
  lastLabel = null;
  renderUndo();
});

$("start").addEventListener("click", async () => {
  const { data } = await api("POST", "/api/robot/start");
  notice(data.message || data.error || "");
});

$("stop").addEventListener("click", async () => {
  const engage = !(state && state.robot && state.robot.software_stop);
  const { data } = await api("POST", "/api/robot/software_stop", { engage });
  notice(data.message || data.error || "");
});

setInterval(renderUndo, 250);
start();
