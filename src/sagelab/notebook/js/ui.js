// DOM helpers shared by the views. Text only ever goes in through textContent: transcripts,
// agent replies and tool output come from speech recognisers, models and tools, and none of
// them may inject markup into the notebook page.

function h(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = String(value);
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function setText(node, value) {
  node.textContent = value === undefined || value === null ? "" : String(value);
}

function formatMs(value) {
  return typeof value === "number" && Number.isFinite(value) ? `${Math.round(value)} ms` : "–";
}

// A horizontal level bar; `level` is an RMS in 0..1, shown on a dB scale from -60 dBFS.
function makeMeter(label) {
  const fill = h("div", { class: "sagelab-meter-fill" });
  const node = h("div", { class: "sagelab-meter", title: label }, [
    h("span", { class: "sagelab-meter-label", text: label }),
    h("div", { class: "sagelab-meter-track" }, [fill]),
  ]);
  return {
    node,
    set(level) {
      const db = level > 0 ? 20 * Math.log10(level) : -120;
      const pct = Math.max(0, Math.min(100, ((db + 60) / 60) * 100));
      fill.style.width = `${pct}%`;
      fill.classList.toggle("sagelab-hot", db > -6);
    },
  };
}

// An oscilloscope of an AnalyserNode (the agent's voice as it is played).
function makeScope(width = 240, height = 36) {
  const canvas = h("canvas", { class: "sagelab-scope", width, height });
  const ctx = canvas.getContext("2d");
  return {
    node: canvas,
    draw(analyser, data) {
      ctx.clearRect(0, 0, width, height);
      const style = getComputedStyle(canvas);
      ctx.strokeStyle = style.color || "#1976d2";
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      if (analyser) analyser.getFloatTimeDomainData(data);
      const n = analyser ? data.length : 2;
      for (let i = 0; i < n; i++) {
        const v = analyser ? Math.max(-1, Math.min(1, data[i] * 2)) : 0; // speech is quiet
        const x = (i / (n - 1)) * width;
        const y = height / 2 - v * (height / 2) * 0.95;
        if (i === 0) ctx.moveTo(x, y);
        else ctx.lineTo(x, y);
      }
      ctx.stroke();
    },
  };
}

// Widget buffers arrive as DataViews that may start at an odd offset: copy to an Int16Array.
function toInt16(view) {
  const start = view.byteOffset;
  return new Int16Array(view.buffer.slice(start, start + view.byteLength - (view.byteLength % 2)));
}

// The device picker, filled once the page may see device labels (after a first permission).
function makeDeviceSelect(model) {
  const select = h("select", { class: "sagelab-devices", title: "microphone" });
  const fill = async () => {
    const devices = await MicCapture.listDevices();
    const chosen = model.get("device_id");
    select.replaceChildren(
      h("option", { value: "", text: "default microphone" }),
      ...devices.map((d) => h("option", { value: d.id, text: d.label, selected: d.id === chosen })),
    );
  };
  select.addEventListener("change", () => {
    model.set("device_id", select.value);
    model.save_changes();
  });
  fill().catch(() => {});
  if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
    navigator.mediaDevices.addEventListener("devicechange", fill);
  }
  return { node: select, refresh: fill };
}
