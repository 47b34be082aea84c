// MicRecorder's view: start/stop, a level meter, the device picker, and what went wrong.

function initialize({ model }) {
  return initializeHub(model, { mic: new MicCapture() });
}

function render({ model, el }) {
  const hub = HUB;
  const mic = hub.mic;
  const meter = makeMeter("mic");
  const devices = makeDeviceSelect(model);
  const status = h("span", { class: "sagelab-note" });
  const button = h("button", { class: "sagelab-button sagelab-record", text: "● Record" });
  const update = () => {
    const on = mic.running;
    button.textContent = on ? "■ Stop" : "● Record";
    button.classList.toggle("sagelab-active", on);
    setText(status, hub.micError || (on ? `recording (${mic.contextRate} Hz capture)` : ""));
    status.classList.toggle("sagelab-error", !!hub.micError);
    if (on) devices.refresh();
  };
  hub.listeners.add(update);
  button.addEventListener("click", () => (mic.running ? hub.stopMic() : hub.startMic()));
  const timer = setInterval(() => meter.set(mic.running ? mic.level : 0), 50);
  el.append(
    h("div", { class: "sagelab-widget sagelab-mic" }, [button, devices.node, meter.node, status]),
  );
  update();
  return () => {
    clearInterval(timer);
    hub.listeners.delete(update);
  };
}

export default { initialize, render };
