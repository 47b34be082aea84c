// The wire between a widget model and its kernel side (see sagelab/notebook/messages.py).
//
// The hub belongs to the model, not to a view: anywidget's initialize() runs when the model
// is created and holds back comm messages until it returns, so a listener installed there
// sees every message the kernel sends, even before any view has rendered and while the
// kernel is too busy to hear that one has. The player and the microphone live here too, so
// audio plays once however many times a widget is displayed. Audio travels as binary
// buffers, never base64.
//
// Each widget model imports its own copy of this module (anywidget loads the ESM per
// model), so module-level state is per model.

class WidgetHub {
  constructor(model, { player = null, mic = null } = {}) {
    this.model = model;
    this.player = player;
    this.mic = mic;
    this.micError = "";
    this.listeners = new Set(); // views that redraw on mic state changes
    this.onMsg = (msg, buffers) => this.handle(msg, buffers || []);
    model.on("msg:custom", this.onMsg);
    if (player) {
      player.onReport = (event) => model.send({ type: "player", events: [event] });
    }
    // Chunks that come before mic_start has gone (the worklet can run while the context is
    // still starting) wait for it: the kernel counts sequence numbers from mic_start, and
    // would take the first ones sent after it for a gap.
    this.heldChunks = null;
    if (mic) {
      mic.onChunk = (chunk) => (this.heldChunks ? this.heldChunks.push(chunk) : this.sendChunk(chunk));
    }
    model.send({ type: "ready" });
  }

  handle(msg, buffers) {
    switch (msg.type) {
      case "clock":
        // The kernel estimates the offset between its monotonic clock and performance.now()
        // from the fastest of these round trips, to put player reports on its timeline.
        this.model.send({ type: "clock", k: msg.k, b_ms: performance.now() });
        break;
      case "audio":
        if (this.player) this.player.push(msg.event_id, toInt16(buffers[0]));
        break;
      case "flush":
        if (this.player) this.player.flush(msg.event_id === null ? undefined : msg.event_id);
        break;
      case "mic_cmd":
        if (msg.cmd === "start") this.startMic();
        else this.stopMic();
        break;
      default:
        break;
    }
  }

  sendChunk(chunk) {
    this.model.send({ type: "mic", seq: chunk.seq, rms: chunk.rms, peak: chunk.peak }, undefined, [
      chunk.pcm,
    ]);
  }

  changed() {
    for (const listener of this.listeners) listener();
  }

  async startMic() {
    const mic = this.mic;
    if (!mic || mic.running) return;
    mic.deviceId = this.model.get("device_id") || "";
    mic.chunkMs = this.model.get("chunk_ms");
    mic.forceNativeRate = !!this.model.get("force_native_rate");
    this.micError = "";
    this.heldChunks = [];
    try {
      await mic.start();
    } catch (err) {
      this.heldChunks = null;
      this.micError = `${err.name || "Error"}: ${err.message || err}`;
      this.model.send({ type: "mic_error", message: this.micError });
      this.changed();
      return;
    }
    this.model.send({ type: "mic_start", context_rate: mic.contextRate, device: mic.deviceLabel });
    const held = this.heldChunks;
    this.heldChunks = null;
    for (const chunk of held) this.sendChunk(chunk);
    this.changed();
  }

  async stopMic() {
    const mic = this.mic;
    if (!mic || !mic.running) return;
    await mic.stop();
    this.model.send({ type: "mic_stop", chunks: mic.seq });
    this.changed();
  }

  async close() {
    this.model.off("msg:custom", this.onMsg);
    await this.stopMic();
    if (this.player) await this.player.close();
  }
}

let HUB = null;

function initializeHub(model, parts) {
  HUB = new WidgetHub(model, parts);
  return () => {
    const hub = HUB;
    HUB = null;
    if (hub) hub.close();
  };
}
