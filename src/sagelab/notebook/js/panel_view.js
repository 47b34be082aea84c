// ConversationPanel's view: controls, status, live transcript, tool calls, per-turn latency,
// the microphone's level and the agent's waveform. The session itself lives in the kernel;
// the model's hub (hub.js) captures and plays audio, views only show things.

const TRANSCRIPT_ROLES = { user: "You", agent: "Agent", note: "·" };

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
  const devices = makeDeviceSelect(model);
  const micMeter = makeMeter("you");
  const scope = makeScope(260, 36);
  const transcript = h("div", { class: "sagelab-transcript", role: "log" });
  const tools = h("tbody");
  const turns = h("tbody");
  const footer = h("div", { class: "sagelab-note" });
  const error = h("div", { class: "sagelab-error" });

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
    const micError = hub.micError ? `microphone: ${hub.micError}` : "";
    setText(error, [model.get("error"), micError].filter(Boolean).join(" · "));
    if (!live && mic.running) hub.stopMic();
  };
  const renderTranscript = () => {
    const rows = model.get("transcript").map((line) =>
      h("div", { class: `sagelab-line sagelab-${line.role}` }, [
        h("span", { class: "sagelab-who", text: TRANSCRIPT_ROLES[line.role] || line.role }),
        h("span", { class: "sagelab-text", text: line.text }),
        line.interrupted ? h("span", { class: "sagelab-tag", text: "interrupted" }) : null,
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
          h("td", { class: "sagelab-mono", text: call.parameters || `(${call.kind} tool)` }),
          h("td", { class: "sagelab-mono", text: call.result }),
          h("td", { text: call.status }),
        ]),
      ),
    );
  };
  const renderTurns = () => {
    turns.replaceChildren(
      ...model.get("turns").map((turn) =>
        h("tr", {}, [
          h("td", { text: turn.event_id }),
          h("td", { text: formatMs(turn.voice_to_voice_ms) }),
          h("td", { text: formatMs(turn.heard_ms) }),
          h("td", { text: formatMs(turn.reply_text_ms) }),
          h("td", { text: turn.underruns ?? "–" }),
        ]),
      ),
    );
  };
  for (const name of ["status", "phase", "title", "error"]) model.on(`change:${name}`, renderHeader);
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

  const table = (head, body) =>
    h("table", { class: "sagelab-table" }, [
      h("thead", {}, [h("tr", {}, head.map((c) => h("th", { text: c })))]),
      body,
    ]);
  el.append(
    h("div", { class: "sagelab-widget sagelab-panel" }, [
      h("div", { class: "sagelab-header" }, [title, status]),
      h("div", { class: "sagelab-controls" }, [connect, record, interrupt, end, devices.node]),
      h("div", { class: "sagelab-meters" }, [micMeter.node, h("span", { text: "agent" }), scope.node]),
      transcript,
      h("details", { class: "sagelab-section", open: true }, [
        h("summary", { text: "Tool calls" }),
        table(["tool", "parameters", "result", ""], tools),
      ]),
      h("details", { class: "sagelab-section", open: true }, [
        h("summary", { text: "Turns" }),
        table(["turn", "voice→voice", "heard after", "reply text", "underruns"], turns),
      ]),
      error,
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
  };
}

export default { initialize, render };
