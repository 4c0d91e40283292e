// The page of minicpmo-server: "Talk" (full duplex over /v1/realtime: microphone at 16 kHz, optional
// camera at 1 frame/s, the 24 kHz reply played as it comes) and "Chat" (/v1/chat/completions,
// streamed). With --api-key the page is opened as /?api_key=KEY and passes the key on.
"use strict";
const apiKey = new URLSearchParams(location.search).get("api_key") || "";
const $ = (id) => document.getElementById(id);
// what the page did, for people and for tests (tests/test_browser.py reads it)
const stats = window.stats = { unitsSent: 0, framesSent: 0, results: 0, speaking: 0, audioChunks: 0,
                               audioPlayed: 0, errors: 0, chatDone: false };
let modelId = "";

function authHeaders(extra = {}) {
  return apiKey ? { ...extra, Authorization: "Bearer " + apiKey } : extra;
}
function showError(message) {
  stats.errors++;
  $("error").textContent = message;
}
function b64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}
function showStats() {
  $("stats").textContent = `units sent ${stats.unitsSent} (frames ${stats.framesSent}), results ${stats.results}, ` +
    `speaking ${stats.speaking}, audio chunks ${stats.audioChunks} (played ${stats.audioPlayed})`;
}

for (const name of ["talk", "chat"]) {
  $("tab-" + name).onclick = () => {
    for (const other of ["talk", "chat"]) {
      $(other).classList.toggle("on", other === name);
      $("tab-" + other).classList.toggle("on", other === name);
    }
  };
}

async function loadModel() {
  const r = await fetch("v1/models", { headers: authHeaders() });
  if (!r.ok) return showError(`GET /v1/models: ${r.status}`);
  const m = (await r.json()).data[0];
  modelId = m.id;
  $("model").textContent = "· " + m.id;
  for (const v of m.voices || []) $("voice").add(new Option(v, v));
}

// ---- Talk ----
let talk = null;  // {ws, ctx, out, stream, node, nextTime, timer}

async function startTalk() {
  $("start").disabled = true;
  $("transcript").textContent = "";
  const camera = $("camera").checked;
  let media;
  try {
    media = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 }, video: camera });
  } catch (e) {
    $("start").disabled = false;
    return showError("microphone: " + e.message);
  }
  const ctx = new AudioContext();
  const out = new AudioContext({ sampleRate: 24000 });
  await ctx.audioWorklet.addModule("ui/mic-worklet.js");
  const node = new AudioWorkletNode(ctx, "mic-units");
  ctx.createMediaStreamSource(media).connect(node);
  // the socket last, with its handlers set at once (its open event must not pass unheard)
  const wsUrl = new URL("v1/realtime", location.href);
  wsUrl.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  wsUrl.search = apiKey ? "?api_key=" + encodeURIComponent(apiKey) : "";
  const ws = new WebSocket(wsUrl);
  ws.binaryType = "arraybuffer";
  talk = { ws, ctx, out, media, node, nextTime: 0, started: false };
  if (camera) {
    $("preview").srcObject = media;
    $("preview").hidden = false;
  }
  // the camera's frame size lets the server ready the vision tower before the first frame
  const video = camera ? media.getVideoTracks()[0].getSettings() : {};
  const frameSize = video.width && video.height ? [video.width, video.height] : undefined;
  ws.onopen = () => ws.send(JSON.stringify({ type: "session.start", voice: $("voice").value || undefined,
                                             audio_format: "pcm16", frame_size: frameSize }));
  ws.onmessage = (ev) => onTalkMessage(ev.data);
  ws.onclose = () => stopTalk(false);
  ws.onerror = () => showError("the realtime connection failed");
  node.port.onmessage = (ev) => sendUnit(ev.data);
  $("stop").disabled = $("interrupt").disabled = false;
}

function frameJpeg() {
  const v = $("preview");
  if (!v.videoWidth) return null;
  const c = document.createElement("canvas");
  c.width = v.videoWidth;
  c.height = v.videoHeight;
  c.getContext("2d").drawImage(v, 0, 0);
  return c.toDataURL("image/jpeg", 0.85).split(",")[1];
}

function sendUnit(samples) {
  if (!talk || !talk.started || talk.ws.readyState !== WebSocket.OPEN) return;
  const pcm = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) pcm[i] = Math.max(-32768, Math.min(32767, Math.round(samples[i] * 32767)));
  const frame = $("camera").checked ? frameJpeg() : null;
  if (frame) {
    talk.ws.send(JSON.stringify({ type: "unit", audio: b64(new Uint8Array(pcm.buffer)), frame }));
    stats.framesSent++;
  } else {
    talk.ws.send(pcm.buffer);
  }
  stats.unitsSent++;
  showStats();
}

function onTalkMessage(data) {
  if (data instanceof ArrayBuffer) return play(new Int16Array(data));
  const ev = JSON.parse(data);
  if (ev.type === "session.started") {
    talk.started = true;
  } else if (ev.type === "unit.result") {
    stats.results++;
    if (!ev.is_listen) stats.speaking++;
    $("state").textContent = ev.is_listen ? "listening" : "speaking";
    $("state").className = ev.is_listen ? "listen" : "speak";
    if (ev.text) $("transcript").textContent += ev.text;
    if (ev.end_of_turn) $("transcript").textContent += "\n";
    if (ev.lag_units > 1 || ev.dropped_units) {
      $("error").textContent = `slower than real time: ${ev.lag_units} waiting, ${ev.dropped_units} dropped`;
    }
  } else if (ev.type === "error") {
    showError(ev.message);
  }
  showStats();
}

function play(pcm) {
  stats.audioChunks++;
  const out = talk.out;
  const buf = out.createBuffer(1, pcm.length, 24000);
  const ch = buf.getChannelData(0);
  for (let i = 0; i < pcm.length; i++) ch[i] = pcm[i] / 32768;
  const src = out.createBufferSource();
  src.buffer = buf;
  src.connect(out.destination);
  src.onended = () => { stats.audioPlayed++; showStats(); };
  talk.nextTime = Math.max(out.currentTime, talk.nextTime);
  src.start(talk.nextTime);
  talk.nextTime += buf.duration;
}

function stopTalk(sendClose = true) {
  if (!talk) return;
  const t = talk;
  talk = null;
  if (sendClose && t.ws.readyState === WebSocket.OPEN) t.ws.send(JSON.stringify({ type: "session.close" }));
  t.node.port.onmessage = null;
  t.media.getTracks().forEach((tr) => tr.stop());
  t.ctx.close();
  $("preview").hidden = true;
  $("start").disabled = false;
  $("stop").disabled = $("interrupt").disabled = true;
  $("state").textContent = "idle";
  $("state").className = "";
}

$("start").onclick = startTalk;
$("stop").onclick = () => stopTalk(true);
$("interrupt").onclick = () => talk && talk.ws.send(JSON.stringify({ type: "interrupt" }));

// ---- Chat ----
const chatHistory = [];

function readDataUrl(file) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(r.result);
    r.onerror = () => reject(r.error);
    r.readAsDataURL(file);
  });
}

async function sendChat() {
  const parts = [];
  const image = $("image").files[0], audio = $("audio").files[0];
  if (image) parts.push({ type: "image_url", image_url: { url: await readDataUrl(image) } });
  if (audio) {
    const url = await readDataUrl(audio);
    const format = (audio.name.split(".").pop() || "wav").toLowerCase();
    parts.push({ type: "input_audio", input_audio: { data: url.split(",")[1], format } });
  }
  parts.push({ type: "text", text: $("prompt").value });
  chatHistory.push({ role: "user", content: parts });
  $("send").disabled = true;
  stats.chatDone = false;
  const reply = document.createElement("div");
  reply.textContent = "";
  $("reply").append(`> ${$("prompt").value}\n`, reply);
  let text = "";
  try {
    const r = await fetch("v1/chat/completions", {
      method: "POST", headers: authHeaders({ "Content-Type": "application/json" }),
      body: JSON.stringify({ model: modelId, messages: chatHistory, stream: true,
                             temperature: Number($("temperature").value), max_tokens: 512 }),
    });
    if (!r.ok) throw new Error((await r.json()).error.message);
    const reader = r.body.getReader(), dec = new TextDecoder();
    let pending = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pending += dec.decode(value, { stream: true });
      let cut;
      while ((cut = pending.indexOf("\n\n")) >= 0) {
        const line = pending.slice(0, cut);
        pending = pending.slice(cut + 2);
        if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
        const ev = JSON.parse(line.slice(6));
        if (ev.error) throw new Error(ev.error.message);
        const piece = ev.choices && ev.choices[0] && ev.choices[0].delta.content;
        if (piece) reply.textContent = (text += piece);
      }
    }
    chatHistory.push({ role: "assistant", content: text });
  } catch (e) {
    chatHistory.pop();
    showError("chat: " + e.message);
  }
  reply.textContent = text + "\n";
  window.lastReply = text;
  stats.chatDone = true;
  $("send").disabled = false;
}
$("send").onclick = sendChat;

loadModel();
