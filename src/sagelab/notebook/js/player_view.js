// AudioPlayer's view: a scope of what is playing, and the player's own counters. The player
// itself belongs to the model (hub.js), so audio plays even before this view renders.

function initialize({ model }) {
  return initializeHub(model, { player: new PcmPlayer({ jitterMs: model.get("jitter_ms") }) });
}

function render({ model, el }) {
  const player = HUB.player;
  const scope = makeScope();
  const stats = h("span", { class: "sagelab-note" });
  const unlock = h("button", {
    class: "sagelab-button",
    text: "🔈 Enable audio",
    title: "the browser keeps audio off until you click in the page",
  });
  unlock.addEventListener("click", () => player.ensureContext());
  const data = new Float32Array(1024);
  let frame = 0;
  const draw = () => {
    unlock.style.display = player.state === "running" ? "none" : "";
    scope.draw(player.analyser, data);
    setText(stats, playerSummary(player));
    frame = requestAnimationFrame(draw);
  };
  el.append(h("div", { class: "sagelab-widget sagelab-player" }, [unlock, scope.node, stats]));
  draw();
  return () => cancelAnimationFrame(frame);
}

export default { initialize, render };
