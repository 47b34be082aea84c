// PcmPlayer: plays the agent's PCM16 16 kHz chunks with the Web Audio API behind a small
// jitter buffer, and reports what the listener actually heard.
//
// The playout rule (the same one sagelab.metrics uses on recorded arrival times):
//   * a turn's first chunk starts jitterMs after it arrives;
//   * each later chunk starts where the previous one ends, if it arrived in time;
//   * a chunk that arrives after the queue ran dry is an underrun: it starts jitterMs after its
//     arrival (the buffer refills), and the silence between is the underrun's gap;
//   * an interruption (flush) stops everything queued at once; audio of that turn or older
//     arriving later is dropped.
// Reports carry performance.now() times of when the sound reaches the output (the context's
// output timestamp), so the kernel can put them on its own clock and compare them with the
// network arrival times it recorded.
//
// A turn's end report also lists when each of its chunks reached this player and how long it
// was (arrivals_ms: performance.now() at push; durations_ms): the chunks come through
// Jupyter's widget messages, which add delay and jitter the kernel's network arrival times
// never show, so the kernel runs the same rule on these times to check the player against it.
// At most MAX_ARRIVALS chunks per turn are listed; arrivals_left_off counts the rest.

const PLAYER_RATE = 16000;
const SCHEDULE_MARGIN_S = 0.005; // a chunk must be queued at least this far ahead to be seamless
const MAX_ARRIVALS = 4000; // chunks listed per turn in its end report (over 6 min of 100 ms chunks)

class PcmPlayer {
  constructor({ jitterMs = 100, endAfterMs = 1000 } = {}) {
    this.jitterMs = jitterMs;
    this.endAfterMs = endAfterMs;
    this.onReport = () => {};
    this.onState = () => {};
    this.context = null;
    this.gain = null;
    this.analyser = null;
    this.turns = new Map(); // event id -> turn state
    this.current = null;
    this.flushedUpTo = 0;
    this.totals = { underruns: 0, gapMs: 0, playedMs: 0, receivedMs: 0, dropped: 0, turns: 0 };
    this.ticker = null;
    this.samples = new Float32Array(1024);
  }

  ensureContext() {
    if (this.context) {
      if (this.context.state === "suspended") this.context.resume().catch(() => {});
      return this.context;
    }
    let context;
    try {
      context = new AudioContext({ sampleRate: PLAYER_RATE, latencyHint: "interactive" });
    } catch (err) {
      // 16 kHz buffers still play in a context at the device rate: the browser resamples.
      context = new AudioContext({ latencyHint: "interactive" });
    }
    this.context = context;
    this.gain = context.createGain();
    this.analyser = context.createAnalyser();
    this.analyser.fftSize = 1024;
    this.gain.connect(this.analyser);
    this.analyser.connect(context.destination);
    context.onstatechange = () => this.onState(context.state);
    if (context.state === "suspended") context.resume().catch(() => {});
    this.ticker = setInterval(() => this.tick(), 20);
    this.onState(context.state);
    return context;
  }

  get state() {
    return this.context ? this.context.state : "closed";
  }

  // performance.now() of the moment context time `t` reaches the output.
  perfAt(t) {
    const ctx = this.context;
    const ts = ctx.getOutputTimestamp ? ctx.getOutputTimestamp() : null;
    if (ts && ts.performanceTime > 0) {
      return ts.performanceTime + (t - ts.contextTime) * 1000;
    }
    const latency = (ctx.outputLatency || ctx.baseLatency || 0) * 1000;
    return performance.now() + (t - ctx.currentTime) * 1000 + latency;
  }

  report(event) {
    this.onReport(event);
  }

  push(eventId, pcm) {
    if (eventId <= this.flushedUpTo) {
      this.totals.dropped += 1;
      return;
    }
    const arrivedMs = performance.now();
    const ctx = this.ensureContext();
    const now = ctx.currentTime;
    const duration = pcm.length / PLAYER_RATE;
    this.totals.receivedMs += duration * 1000;
    let turn = this.turns.get(eventId);
    let when;
    if (!turn) {
      if (this.current && !this.current.closed) this.current.closed = true; // no more of it
      // A new turn waits for the jitter buffer, but never overlaps the previous turn.
      const previousEnd = this.current ? this.current.queueEnd : 0;
      when = Math.max(now + this.jitterMs / 1000, previousEnd);
      turn = {
        id: eventId,
        start: when,
        queueEnd: when,
        sources: [],
        started: false,
        closed: false,
        ended: false,
        receivedMs: 0,
        rmsMax: 0,
        underruns: 0,
        arrivalsMs: [],
        durationsMs: [],
        arrivalsLeftOff: 0,
        interruptedMs: null,
      };
      this.turns.set(eventId, turn);
      this.current = turn;
      this.totals.turns += 1;
    } else if (turn.queueEnd >= now + SCHEDULE_MARGIN_S) {
      when = turn.queueEnd;
    } else {
      // The queue ran dry at turn.queueEnd; this chunk refills the buffer first.
      when = now + this.jitterMs / 1000;
      const gapMs = (when - turn.queueEnd) * 1000;
      turn.underruns += 1;
      this.totals.underruns += 1;
      this.totals.gapMs += gapMs;
      turn.ended = false;
      this.report({
        kind: "underrun",
        event_id: eventId,
        b_ms: this.perfAt(turn.queueEnd),
        gap_ms: gapMs,
      });
    }
    const buffer = ctx.createBuffer(1, pcm.length, PLAYER_RATE);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) channel[i] = pcm[i] / 32768;
    const source = ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(this.gain);
    source.start(when);
    turn.sources.push({ source, start: when, duration });
    turn.queueEnd = when + duration;
    turn.receivedMs += duration * 1000;
    if (turn.arrivalsMs.length < MAX_ARRIVALS) {
      turn.arrivalsMs.push(arrivedMs);
      turn.durationsMs.push(duration * 1000);
    } else {
      turn.arrivalsLeftOff += 1;
    }
  }

  playedMs(turn, upTo) {
    let played = 0;
    for (const s of turn.sources) played += Math.min(Math.max(upTo - s.start, 0), s.duration);
    return played * 1000;
  }

  finish(turn, flushed) {
    if (turn.ended) return;
    const now = this.context.currentTime;
    const at = flushed ? Math.min(now, turn.queueEnd) : turn.queueEnd;
    const played = this.playedMs(turn, at);
    turn.ended = true;
    // A turn can end twice (a late chunk after endAfterMs reopens it): count its audio once.
    this.totals.playedMs += played - (turn.reportedMs || 0);
    turn.reportedMs = played;
    this.report({
      kind: "end",
      event_id: turn.id,
      b_ms: this.perfAt(at),
      played_ms: played,
      received_ms: turn.receivedMs,
      flushed,
      rms_max: turn.rmsMax,
      arrivals_ms: turn.arrivalsMs.slice(),
      durations_ms: turn.durationsMs.slice(),
      arrivals_left_off: turn.arrivalsLeftOff,
      ...(flushed ? { interrupted_ms: turn.interruptedMs } : {}),
    });
  }

  // Stop all queued audio of turns up to `eventId` (default: everything), as on barge-in.
  flush(eventId) {
    const upTo = eventId ?? Number.MAX_SAFE_INTEGER;
    if (!this.context) {
      this.flushedUpTo = Math.max(this.flushedUpTo, eventId ?? 0);
      return;
    }
    const now = this.context.currentTime;
    const flushedMs = performance.now();
    for (const turn of this.turns.values()) {
      if (turn.id > upTo || turn.ended) continue;
      turn.interruptedMs = flushedMs;
      for (const s of turn.sources) {
        if (s.start + s.duration > now) {
          try {
            s.source.stop();
          } catch (err) {
            // already stopped
          }
        }
      }
      if (!turn.started && turn.start < now) this.markStarted(turn);
      this.finish(turn, true);
      turn.closed = true;
    }
    const newest = Math.max(0, ...this.turns.keys());
    this.flushedUpTo = Math.max(this.flushedUpTo, eventId ?? newest);
  }

  markStarted(turn) {
    turn.started = true;
    this.report({ kind: "start", event_id: turn.id, b_ms: this.perfAt(turn.start) });
  }

  level() {
    if (!this.analyser) return 0;
    this.analyser.getFloatTimeDomainData(this.samples);
    let sum = 0;
    for (let i = 0; i < this.samples.length; i++) sum += this.samples[i] * this.samples[i];
    return Math.sqrt(sum / this.samples.length);
  }

  tick() {
    const now = this.context.currentTime;
    const rms = this.level();
    for (const turn of this.turns.values()) {
      if (turn.ended) continue;
      if (!turn.started && now >= turn.start) this.markStarted(turn);
      if (turn.started && now < turn.queueEnd) turn.rmsMax = Math.max(turn.rmsMax, rms);
      const quietMs = (now - turn.queueEnd) * 1000;
      if (turn.started && quietMs >= 0 && (turn.closed || quietMs >= this.endAfterMs)) {
        this.finish(turn, false);
      }
    }
    // Forget finished turns, keeping the newest for ordering.
    for (const [id, turn] of this.turns) {
      if (turn.ended && turn !== this.current) this.turns.delete(id);
    }
  }

  // Audio heard so far, including the turn playing now.
  playedNowMs() {
    let played = this.totals.playedMs;
    if (!this.context) return played;
    const now = this.context.currentTime;
    for (const turn of this.turns.values()) {
      if (!turn.ended) played += this.playedMs(turn, now);
    }
    return played;
  }

  get playing() {
    return !!this.current && !this.current.ended && this.context.currentTime < this.current.queueEnd;
  }

  async close() {
    if (this.ticker) clearInterval(this.ticker);
    this.ticker = null;
    if (this.context) await this.context.close();
    this.context = null;
  }
}

function playerSummary(player) {
  const t = player.totals;
  return (
    `played ${(player.playedNowMs() / 1000).toFixed(1)} s · underruns ${t.underruns}` +
    (t.underruns ? ` (${Math.round(t.gapMs)} ms silent)` : "") +
    ` · audio ${player.state}`
  );
}
