// MicCapture: getUserMedia -> AudioWorklet -> PCM16 16 kHz chunks, handed to `onChunk`.
//
// The context asks for 16 kHz so the browser resamples in its own (good) converter; where a
// browser refuses to connect a microphone to a 16 kHz context, capture falls back to the
// device's rate and the worklet's windowed-sinc resampler does the conversion.

const MIC_RATE = 16000;

class MicCapture {
  constructor({ chunkMs = 100, deviceId = "", forceNativeRate = false, processing = {} } = {}) {
    this.chunkMs = chunkMs;
    this.deviceId = deviceId;
    this.forceNativeRate = forceNativeRate;
    this.processing = processing;
    this.onChunk = () => {};
    this.onLevel = () => {};
    this.onError = () => {};
    this.context = null;
    this.stream = null;
    this.node = null;
    this.contextRate = 0;
    this.deviceLabel = "";
    this.seq = 0;
    this.level = 0; // RMS of the latest chunk, for meters
  }

  get running() {
    return this.node !== null;
  }

  static async listDevices() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return [];
    const devices = await navigator.mediaDevices.enumerateDevices();
    return devices
      .filter((d) => d.kind === "audioinput")
      .map((d, i) => ({ id: d.deviceId, label: d.label || `microphone ${i + 1}` }));
  }

  async openContext(stream) {
    if (!this.forceNativeRate) {
      try {
        const context = new AudioContext({ sampleRate: MIC_RATE, latencyHint: "interactive" });
        // Firefox throws here when the device runs at another rate.
        const source = context.createMediaStreamSource(stream);
        return { context, source };
      } catch (err) {
        console.info("sagelab: no 16 kHz capture context, resampling in the worklet:", err);
      }
    }
    const context = new AudioContext({ latencyHint: "interactive" });
    return { context, source: context.createMediaStreamSource(stream) };
  }

  async start() {
    if (this.running) return;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error(
        "this page cannot use the microphone: open Jupyter over https or on localhost",
      );
    }
    const audio = {
      channelCount: 1,
      echoCancellation: this.processing.echoCancellation ?? true,
      noiseSuppression: this.processing.noiseSuppression ?? true,
      autoGainControl: this.processing.autoGainControl ?? true,
    };
    if (this.deviceId) audio.deviceId = { exact: this.deviceId };
    this.stream = await navigator.mediaDevices.getUserMedia({ audio });
    const track = this.stream.getAudioTracks()[0];
    this.deviceLabel = track ? track.label : "";
    const { context, source } = await this.openContext(this.stream);
    this.context = context;
    this.contextRate = context.sampleRate;
    const url = URL.createObjectURL(new Blob([WORKLET_SOURCE], { type: "text/javascript" }));
    try {
      await context.audioWorklet.addModule(url);
    } finally {
      URL.revokeObjectURL(url);
    }
    this.node = new AudioWorkletNode(context, "sagelab-mic", {
      numberOfInputs: 1,
      numberOfOutputs: 0,
      channelCount: 1,
      channelCountMode: "explicit",
      processorOptions: { outRate: MIC_RATE, chunkMs: this.chunkMs },
    });
    this.node.port.onmessage = (event) => {
      const msg = event.data;
      if (msg.type !== "chunk") return;
      this.seq = msg.seq + 1;
      this.level = msg.rms;
      this.onLevel(msg.rms, msg.peak);
      this.onChunk(msg);
    };
    source.connect(this.node);
    if (context.state === "suspended") await context.resume();
  }

  async stop() {
    const node = this.node;
    if (!node) return;
    this.node = null;
    // Let the worklet post its last partial chunk before the context goes away.
    const last = new Promise((resolve) => {
      const previous = node.port.onmessage;
      const timer = setTimeout(resolve, 200);
      node.port.onmessage = (event) => {
        previous(event);
        clearTimeout(timer);
        resolve();
      };
    });
    node.port.postMessage({ type: "stop" });
    await last;
    for (const track of this.stream ? this.stream.getTracks() : []) track.stop();
    this.stream = null;
    node.disconnect();
    await this.context.close();
    this.context = null;
    this.level = 0;
    this.onLevel(0, 0);
  }
}
