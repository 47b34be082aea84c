// ConversationPanel's view: controls, status, live transcript, tool calls, per-turn latency,
// the microphone's level and the agent's waveform. The session itself lives in the kernel;
// the model's hub (hub.js) captures and plays audio, views only show things.

const TRANSCRIPT_ROLES = { user: "You", agent: "Agent", note: "·" };
const STAGE_LABELS = {
  endpointing: "endpointing",
  stt: "STT",
  brain: "brain",
  tool: "tool",
  tts: "TTS",
  network: "network",
};
const TURN_COLUMNS = [
  ["turn", "turn"],
  ["you said", "user_text"],
  ["voice→voice", "voice_to_voice_ms"],
  ["where the time went", "stages"],
  ["heard after", "heard_ms"],
  ["", "flags"],
  ["replay", "replay"],
];

// A turn's voice-to-voice as a stacked bar of its stages, scaled to the slowest turn shown.
function stageBar(turn, parts, scaleMs) {
  const total = turn.voice_to_voice_ms;
  const known = parts.filter((p) => typeof turn.parts[p] === "number");
  if (typeof total !== "number" || known.length === 0) {
    return h("span", {
      class: "sagelab-muted",
      text: "–",
      title: "no stage timings for this turn (the server reports them with stages=True)",
    });
  }
  const sum = known.reduce((acc, p) => acc + turn.parts[p], 0);
  const width = Math.max(4, Math.min(100, (100 * Math.max(total, sum)) / scaleMs));
  const segments = known
    .filter((p) => turn.parts[p] > 0)
    .map((p) =>
      h("span", {
        class: "sagelab-stage",
        "data-part": p,
        style: `width:${(100 * turn.parts[p]) / Math.max(total, sum)}%`,
        title: `${STAGE_LABELS[p]} ${Math.round(turn.parts[p])} ms`,
      }),
    );
  const summary = known.map((p) => `${STAGE_LABELS[p]} ${Math.round(turn.parts[p])} ms`).join(" · ");
  return h("div", { class: "sagelab-stagebar", title: summary }, [
    h("div", { class: "sagelab-stagebar-fill", style: `width:${width}%` }, segments),
  ]);
}

// The heard part of an interrupted reply, then the rest struck through.
function agentText(line) {
  const text = line.text || "";
  if (!line.interrupted || typeof line.heard !== "string") {
    return h("span", { class: "sagelab-text", text });
  }
  const heard = line.heard;
  const prefix = text.startsWith(heard);
  return h("span", { class: "sagelab-text" }, [
    h("span", { class: "sagelab-heard", text: prefix ? heard : "" }),
    h("span", {
      class: "sagelab-unheard",
      text: prefix ? text.slice(heard.length) : text,
      title: "not heard: playback stopped before this",
    }),
  ]);
}

function interruptTag(line) {
  if (!line.interrupted) return null;
  const played = typeof line.played_ms === "number" ? ` after ${(line.played_ms / 1000).toFixed(1)} s` : "";
  const heard = typeof line.heard === "string" ? `heard: “${line.heard || "nothing"}”` : "";
  return h("span", { class: "sagelab-tag", text: `interrupted${played}`, title: heard });
}

function initialize({ model }) {
  return initializeHub(model, {
    mic: new MicCapture(),
    player: new PcmPlayer({ jitterMs: model.get("jitter_ms") }),
  });
}

function render({ model, el }) {
  const hub = HUB;
  const { mic, player } = hub;

  const title = h("span", { class: "sagelab-title" });
  const status = h("span", { class: "sagelab-status" });
  const connect = h("button", { class: "sagelab-button", text: "Connect" });
  const record = h("button", { class: "sagelab-button sagelab-record", text: "● Record" });
  const interrupt = h("button", { class: "sagelab-button", text: "Interrupt" });
  const end = h("button", { class: "sagelab-button", text: "End" });
  const save = h("button", {
    class: "sagelab-button",
    text: "Save",
    title: "save the timeline, both audio tracks and the turn tables (panel.save(folder))",
  });
  const devices = makeDeviceSelect(model);
  const micMeter = makeMeter("you");
  const scope = makeScope(260, 36);
  const transcript = h("div", { class: "sagelab-transcript", role: "log" });
  const tools = h("tbody");
  const turns = h("tbody");
  const legend = h("div", { class: "sagelab-legend" });
  const clip = h("div", { class: "sagelab-clip" });
  const footer = h("div", { class: "sagelab-note" });
  const error = h("div", { class: "sagelab-error" });
  const saved = h("div", { class: "sagelab-note sagelab-saved" });

  const action = (name) => model.send({ type: "action", action: name });
  const micChanged = () => {
    const on = mic.running;
    record.textContent = on ? "■ Stop" : "● Record";
    record.classList.toggle("sagelab-active", on);
    renderHeader();
    if (on) devices.refresh();
  };
  hub.listeners.add(micChanged);

  connect.addEventListener("click", () => {
    player.ensureContext(); // a click is what lets the page play sound
    action("connect");
  });
  record.addEventListener("click", () => {
    player.ensureContext();
    if (mic.running) hub.stopMic();
    else hub.startMic();
  });
  interrupt.addEventListener("click", () => {
    player.flush(); // stop the sound now; the kernel is told after
    action("interrupt");
  });
  end.addEventListener("click", () => {
    hub.stopMic();
    player.flush();
    action("end");
  });
  save.addEventListener("click", () => action("save"));

  // A turn's audio, sent by the kernel as a WAV: play it here and offer it for download.
  let clipUrl = null;
  const onClip = (msg, buffers) => {
    if (!msg || msg.type !== "clip" || !buffers || !buffers.length) return;
    const view = buffers[0];
    const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength).slice();
    if (clipUrl) URL.revokeObjectURL(clipUrl);
    clipUrl = URL.createObjectURL(new Blob([bytes], { type: "audio/wav" }));
    const turn = model.get("turns").find((t) => t.event_id === msg.event_id);
    const name = turn ? (turn.kind === "greeting" ? "greeting" : `turn ${turn.turn}`) : `event ${msg.event_id}`;
    const who = msg.side === "user" ? "you" : "agent";
    const audio = h("audio", { controls: true, src: clipUrl, "data-event-id": msg.event_id, "data-side": msg.side });
    const file = `${name.replace(" ", "-")}-${msg.side}.wav`;
    clip.replaceChildren(
      h("span", { class: "sagelab-muted", text: `${name} · ${who} · ${msg.seconds.toFixed(1)} s` }),
      audio,
      h("a", { href: clipUrl, download: file, text: "download" }),
    );
    player.ensureContext();
    audio.play().catch(() => {});
  };
  model.on("msg:custom", onClip);

  const renderHeader = () => {
    setText(title, model.get("title"));
    const state = model.get("status");
    setText(status, state);
    status.dataset.state = state.split(":")[0].replace(/\s+/g, "-");
    const phase = model.get("phase");
    const live = phase === "connected";
    connect.disabled = phase === "connecting" || live;
    record.disabled = !live && !mic.running;
    interrupt.disabled = !live;
    end.disabled = !live;
    save.disabled = phase !== "connected" && phase !== "ended";
    const micError = hub.micError ? `microphone: ${hub.micError}` : "";
    setText(error, [model.get("error"), micError].filter(Boolean).join(" · "));
    setText(saved, model.get("saved_to") ? `saved to ${model.get("saved_to")}` : "");
    if (!live && mic.running) hub.stopMic();
  };
  const renderTranscript = () => {
    const rows = model.get("transcript").map((line) =>
      h("div", { class: `sagelab-line sagelab-${line.role}`, "data-event-id": line.event_id }, [
        h("span", { class: "sagelab-who", text: TRANSCRIPT_ROLES[line.role] || line.role }),
        line.role === "agent" ? agentText(line) : h("span", { class: "sagelab-text", text: line.text }),
        interruptTag(line),
      ]),
    );
    transcript.replaceChildren(...rows);
    transcript.scrollTop = transcript.scrollHeight;
  };
  const renderTools = () => {
    tools.replaceChildren(
      ...model.get("tool_calls").map((call) =>
        h("tr", { class: `sagelab-tool-${call.status}` }, [
          h("td", { text: call.name }),
          h("td", {
            class: "sagelab-mono sagelab-tool-parameters",
            text: call.parameters || (call.kind === "client" ? "{}" : "(not reported by this server)"),
          }),
          h("td", { class: "sagelab-mono", text: call.result }),
          h("td", { text: call.status }),
        ]),
      ),
    );
  };
  const renderTurns = () => {
    const help = model.get("column_help") || {};
    const parts = model.get("stage_parts") || Object.keys(STAGE_LABELS);
    const rows = model.get("turns");
    const scale = Math.max(1, ...rows.map((t) => (typeof t.voice_to_voice_ms === "number" ? t.voice_to_voice_ms : 0)));
    const replay = (turn, side, label) =>
      h("button", {
        class: "sagelab-button sagelab-small sagelab-replay",
        "data-side": side,
        text: `▶ ${label}`,
        title: `play ${label === "you" ? "what you said" : "the agent's reply"} in this turn again`,
        onclick: () => {
          player.ensureContext();
          model.send({ type: "action", action: "replay", event_id: turn.event_id, side });
        },
      });
    turns.replaceChildren(
      ...rows.map((turn) => {
        const greeting = turn.kind === "greeting";
        const flags = [];
        if (turn.interrupted) {
          const played = typeof turn.played_ms === "number" ? ` after ${(turn.played_ms / 1000).toFixed(1)} s` : "";
          flags.push(
            h("span", {
              class: "sagelab-flag sagelab-cut",
              text: "cut",
              title: `interrupted${played}; heard: “${turn.heard_text || "nothing"}”`,
            }),
          );
        }
        if (typeof turn.drafted_ms === "number") {
          flags.push(h("span", { class: "sagelab-flag sagelab-drafted", text: "drafted", title: `${formatMs(turn.drafted_ms)} ahead: ${help.drafted_ms}` }));
        }
        if (turn.tools.length) flags.push(h("span", { class: "sagelab-flag", text: turn.tools.join(", "), title: "tools called" }));
        if (turn.underruns) flags.push(h("span", { class: "sagelab-flag sagelab-warn", text: `${turn.underruns} underrun${turn.underruns > 1 ? "s" : ""}`, title: "the player ran dry mid-turn" }));
        return h("tr", { "data-event-id": turn.event_id, class: turn.interrupted ? "sagelab-interrupted" : "" }, [
          h("td", { class: "sagelab-turn-number", text: greeting ? "greeting" : turn.turn, title: `event_id ${turn.event_id}` }),
          h("td", {}, [
            h("div", {
              class: "sagelab-said",
              text: greeting ? "(the agent speaks first)" : turn.user_text || (turn.kind === "text" ? "(typed)" : ""),
              title: turn.user_text || "",
            }),
          ]),
          h("td", { class: "sagelab-num", text: formatMs(turn.voice_to_voice_ms), title: greeting ? "nothing to wait for: nobody spoke before it" : help.voice_to_voice_ms }),
          h("td", { class: "sagelab-stages" }, [stageBar(turn, parts, scale)]),
          h("td", { class: "sagelab-num", text: formatMs(turn.heard_ms) }),
          h("td", {}, flags),
          h("td", { class: "sagelab-replays" }, [
            turn.has_user_audio ? replay(turn, "user", "you") : null,
            replay(turn, "agent", "agent"),
          ]),
        ]);
      }),
    );
    legend.replaceChildren(
      ...parts.map((p) =>
        h("span", { class: "sagelab-legend-item", title: help[`${p}_ms`] || "" }, [
          h("span", { class: "sagelab-stage sagelab-swatch", "data-part": p }),
          STAGE_LABELS[p] || p,
        ]),
      ),
    );
  };
  for (const name of ["status", "phase", "title", "error", "saved_to"]) model.on(`change:${name}`, renderHeader);
  model.on("change:transcript", renderTranscript);
  model.on("change:tool_calls", renderTools);
  model.on("change:turns", renderTurns);

  const data = new Float32Array(1024);
  let frame = 0;
  const draw = () => {
    scope.draw(player.analyser, data);
    micMeter.set(mic.running ? mic.level : 0);
    const capture = mic.running ? ` · mic ${mic.contextRate} Hz → 16 kHz` : "";
    setText(footer, playerSummary(player) + capture);
    frame = requestAnimationFrame(draw);
  };

  const table = (head, body, titles = {}, kind = "") =>
    h("table", { class: `sagelab-table ${kind}` }, [
      h("thead", {}, [h("tr", {}, head.map((c) => h("th", { text: c, title: titles[c] })))]),
      body,
    ]);
  const help = model.get("column_help") || {};
  const turnTitles = {
    turn: help.turn,
    "voice→voice": help.voice_to_voice_ms,
    "where the time went": "voice-to-voice split into the server's stages; hover a bar for its numbers",
    "heard after": "end of your speech → the reply's first sound in this browser (jitter buffer included)",
    replay: "hear what you said, or the agent's reply, again; the clip can be downloaded",
  };
  el.append(
    h("div", { class: "sagelab-widget sagelab-panel" }, [
      h("div", { class: "sagelab-header" }, [title, status]),
      h("div", { class: "sagelab-controls" }, [connect, record, interrupt, end, save, devices.node]),
      h("div", { class: "sagelab-meters" }, [micMeter.node, h("span", { text: "agent" }), scope.node]),
      transcript,
      h("details", { class: "sagelab-section", open: true }, [
        h("summary", { text: "Tool calls" }),
        table(["tool", "parameters", "result", ""], tools, {}, "sagelab-tools"),
      ]),
      h("details", { class: "sagelab-section", open: true }, [
        h("summary", { text: "Turns" }),
        table(
          TURN_COLUMNS.map(([label]) => label),
          turns,
          turnTitles,
          "sagelab-turns",
        ),
        legend,
        clip,
      ]),
      error,
      saved,
      footer,
    ]),
  );
  renderHeader();
  renderTranscript();
  renderTools();
  renderTurns();
  draw();
  return () => {
    cancelAnimationFrame(frame);
    hub.listeners.delete(micChanged);
    model.off("msg:custom", onClip);
    if (clipUrl) URL.revokeObjectURL(clipUrl);
  };
}

export default { initialize, render };
