// The microphone's AudioWorklet: resample to 16 kHz, convert to PCM16 and post whole chunks.
//
// It runs on the audio thread, 128 frames at a time. Posting every 128-frame block to the
// page (and on to the kernel) would mean 125 messages a second; Jupyter rate-limits widget
// messages and the kernel handles them only while idle, so the worklet gathers chunk_ms of
// audio (20-100 ms) and transfers one ArrayBuffer per chunk, with its level for the meter.
//
// This file is loaded twice: as the worklet module (where registerProcessor exists) and into
// the page for tests of the resampler, so the processor is only defined inside the worklet.

// A streaming windowed-sinc resampler (mono float32). Browsers that cannot open a 16 kHz
// AudioContext for a microphone (Firefox, Safari with some devices) capture at 44.1 or 48 kHz;
// decimating by dropping or linearly interpolating samples would fold everything above 8 kHz
// back into the speech band, so this low-passes at 0.9 x the output Nyquist while it
// interpolates.
class Pcm16Resampler {
  constructor(inRate, outRate, halfTapsOut = 16) {
    this.inRate = inRate;
    this.outRate = outRate;
    this.step = inRate / outRate; // input samples per output sample
    this.cutoff = Math.min(1, outRate / inRate) * 0.9; // relative to the input Nyquist
    // The window spans halfTapsOut output periods each side, so the transition band is as
    // narrow at 48 kHz in as at 16 kHz (about 1 kHz wide, done by 8 kHz).
    this.halfTaps = Math.ceil(halfTapsOut * Math.max(1, this.step));
    this.history = new Float32Array(0); // input not yet fully used
    this.pos = 0; // position of the next output sample in `history`
    this.passthrough = inRate === outRate;
  }

  kernel(t) {
    // Low-pass sinc with a Blackman window of 2 * halfTaps input samples.
    const x = t * this.cutoff;
    const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
    const w = t / this.halfTaps;
    if (w <= -1 || w >= 1) return 0;
    const window = 0.42 + 0.5 * Math.cos(Math.PI * w) + 0.08 * Math.cos(2 * Math.PI * w);
    return this.cutoff * sinc * window;
  }

  // Feed input samples; returns the output samples that are complete so far.
  process(input) {
    if (this.passthrough) return Float32Array.from(input);
    const data = new Float32Array(this.history.length + input.length);
    data.set(this.history, 0);
    data.set(input, this.history.length);
    const out = [];
    const h = this.halfTaps;
    // An output sample at position p needs inputs up to p + h.
    while (this.pos + h < data.length) {
      const centre = Math.floor(this.pos);
      const frac = this.pos - centre;
      let acc = 0;
      for (let k = -h + 1; k <= h; k++) {
        const i = centre + k;
        if (i < 0) continue;
        acc += data[i] * this.kernel(k - frac);
      }
      out.push(acc);
      this.pos += this.step;
    }
    // Keep h samples of history before the next position.
    const keepFrom = Math.max(0, Math.floor(this.pos) - h);
    this.history = data.slice(keepFrom);
    this.pos -= keepFrom;
    return Float32Array.from(out);
  }
}

function floatToPcm16(samples) {
  const pcm = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    pcm[i] = s < 0 ? Math.round(s * 32768) : Math.round(s * 32767);
  }
  return pcm;
}

if (typeof registerProcessor === "function") {
  class SagelabMicProcessor extends AudioWorkletProcessor {
    constructor(options) {
      super();
      const opts = (options && options.processorOptions) || {};
      this.outRate = opts.outRate || 16000;
      this.chunkSamples = Math.round((this.outRate * (opts.chunkMs || 100)) / 1000);
      // `sampleRate` is the worklet global: the context's real rate.
      this.resampler = new Pcm16Resampler(sampleRate, this.outRate);
      this.chunk = new Int16Array(this.chunkSamples);
      this.fill = 0;
      this.seq = 0;
      this.sumSquares = 0;
      this.peak = 0;
      this.running = true;
      this.port.onmessage = (event) => {
        if (event.data && event.data.type === "stop") {
          this.flush();
          this.running = false;
        }
      };
    }

    flush() {
      if (this.fill === 0) return;
      this.post(this.chunk.slice(0, this.fill));
      this.fill = 0;
    }

    post(pcm) {
      const n = pcm.length || 1;
      const rms = Math.sqrt(this.sumSquares / n);
      this.port.postMessage(
        { type: "chunk", seq: this.seq++, pcm: pcm.buffer, rms, peak: this.peak },
        [pcm.buffer],
      );
      this.sumSquares = 0;
      this.peak = 0;
    }

    process(inputs) {
      if (!this.running) return false;
      const channels = inputs[0];
      if (!channels || channels.length === 0) return true;
      let mono = channels[0];
      if (channels.length > 1) {
        mono = new Float32Array(channels[0].length);
        for (const ch of channels) for (let i = 0; i < ch.length; i++) mono[i] += ch[i];
        for (let i = 0; i < mono.length; i++) mono[i] /= channels.length;
      }
      const pcm = floatToPcm16(this.resampler.process(mono));
      for (let i = 0; i < pcm.length; i++) {
        const v = pcm[i] / 32768;
        this.sumSquares += v * v;
        this.peak = Math.max(this.peak, Math.abs(v));
        this.chunk[this.fill++] = pcm[i];
        if (this.fill === this.chunkSamples) {
          this.post(this.chunk);
          this.chunk = new Int16Array(this.chunkSamples);
          this.fill = 0;
        }
      }
      return true;
    }
  }
  registerProcessor("sagelab-mic", SagelabMicProcessor);
}
