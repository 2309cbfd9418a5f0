// The demo page: plain JavaScript, no framework, nothing loaded from elsewhere.
// State: the 64x64 input (a PNG data: URL issued by the server), the hole box, the caption.
"use strict";

const SIZE = 64;
const $ = (id) => document.getElementById(id);
const state = {
  info: null,
  image: null, // data:image/png;base64,... of the 64x64 input
  pixels: null, // an Image element of it, for the canvas
  box: [16, 16, 32, 32],
  examplesOffset: 0,
  busy: false,
  turns: [], // {question, answer} told so far (runs that read a conversation)
};

// --- Small helpers ---------------------------------------------------------------------------

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function api(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (error) {
    throw new Error("the server cannot be reached (" + error.message + ")");
  }
  let payload;
  try {
    payload = await response.json();
  } catch (error) {
    throw new Error("the server answered " + response.status + " without a readable message");
  }
  if (!response.ok) throw new Error(payload.error || "error " + response.status);
  return payload;
}

function el(tag, attributes, children) {
  const node = document.createElement(tag);
  Object.entries(attributes || {}).forEach(([key, value]) => {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  });
  (children || []).forEach((child) => node.appendChild(child));
  return node;
}

// --- Status and warm-up ----------------------------------------------------------------------

function setStatus() {
  const info = state.info;
  const pill = $("status");
  if (!info) return;
  const k = Number($("k").value);
  if (info.warming_k.length) {
    pill.className = "pill warming";
    pill.textContent = "warming up: compiling the sampler for K=" + info.warming_k.join(", ");
  } else {
    pill.className = "pill ready";
    pill.textContent = "ready (compiled for K=" + info.compiled_k.join(", ") + ")";
  }
  pill.dataset.ready = info.compiled_k.includes(k) ? "yes" : "no";
}

async function refreshInfo() {
  try {
    state.info = await api("/api/info");
  } catch (error) {
    $("status").className = "pill down";
    $("status").textContent = "server down";
    setTimeout(refreshInfo, 2000);
    return;
  }
  setStatus();
  if (state.info.warming_k.length || !state.info.compiled_k.length) setTimeout(refreshInfo, 1000);
}

// --- The image and the hole ------------------------------------------------------------------

function setImage(dataUrl) {
  state.image = dataUrl;
  const img = new Image();
  img.onload = () => {
    state.pixels = img;
    draw();
  };
  img.src = dataUrl;
  $("input64").src = dataUrl;
}

function setBox(box, fromFields) {
  state.box = box.map((v) => Math.round(v));
  if (!fromFields) {
    ["x", "y", "w", "h"].forEach((name, i) => ($("box-" + name).value = state.box[i]));
  }
  draw();
}

function draw() {
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  const scale = canvas.width / SIZE;
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (state.pixels) ctx.drawImage(state.pixels, 0, 0, canvas.width, canvas.height);
  else {
    ctx.fillStyle = "#666";
    ctx.font = "16px sans-serif";
    ctx.fillText("pick an example or upload a photo", 40, canvas.height / 2);
  }
  const [x, y, w, h] = state.box;
  ctx.fillStyle = "rgba(128, 128, 128, 0.55)";
  ctx.fillRect(x * scale, y * scale, w * scale, h * scale);
  ctx.setLineDash([6, 4]);
  ctx.lineWidth = 2;
  ctx.strokeStyle = "#ffd400";
  ctx.strokeRect(x * scale + 1, y * scale + 1, w * scale - 2, h * scale - 2);
}

function imagePoint(event) {
  const canvas = $("canvas");
  const rect = canvas.getBoundingClientRect();
  const px = ((event.clientX - rect.left) / rect.width) * SIZE;
  const py = ((event.clientY - rect.top) / rect.height) * SIZE;
  return [Math.min(Math.max(px, 0), SIZE), Math.min(Math.max(py, 0), SIZE)];
}

function setUpCanvas() {
  const canvas = $("canvas");
  let drag = null;
  canvas.addEventListener("pointerdown", (event) => {
    const [px, py] = imagePoint(event);
    const [x, y, w, h] = state.box;
    canvas.setPointerCapture(event.pointerId);
    if (px >= x && px < x + w && py >= y && py < y + h) drag = { mode: "move", dx: px - x, dy: py - y };
    else drag = { mode: "draw", x0: Math.floor(px), y0: Math.floor(py), moved: false };
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drag) return;
    const [px, py] = imagePoint(event);
    if (drag.mode === "move") {
      const [, , w, h] = state.box;
      const x = Math.min(Math.max(Math.round(px - drag.dx), 0), SIZE - w);
      const y = Math.min(Math.max(Math.round(py - drag.dy), 0), SIZE - h);
      setBox([x, y, w, h]);
    } else {
      const x1 = Math.ceil(px);
      const y1 = Math.ceil(py);
      const x = Math.min(drag.x0, x1);
      const y = Math.min(drag.y0, y1);
      const w = Math.abs(x1 - drag.x0);
      const h = Math.abs(y1 - drag.y0);
      if (w >= 1 && h >= 1) {
        drag.moved = true;
        setBox([x, y, Math.min(w, SIZE - x), Math.min(h, SIZE - y)]);
      }
    }
  });
  const end = () => (drag = null);
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  ["x", "y", "w", "h"].forEach((name) =>
    $("box-" + name).addEventListener("input", () => {
      setBox(["x", "y", "w", "h"].map((n) => Number($("box-" + n).value)), true);
    }),
  );
  $("centre").addEventListener("click", () => setBox([16, 16, 32, 32]));
}

// --- Examples and uploads --------------------------------------------------------------------

function setCaptionChips(captions) {
  const chips = $("caption-chips");
  chips.replaceChildren();
  captions.forEach((caption) => {
    const chip = el("button", { type: "button", text: caption, title: "use this caption" });
    chip.addEventListener("click", () => ($("caption").value = caption));
    chips.appendChild(chip);
  });
}

async function loadExamples(offset) {
  const limit = 24;
  let page;
  try {
    page = await api("/api/examples?offset=" + offset + "&limit=" + limit);
  } catch (error) {
    showError(error.message);
    return;
  }
  state.examplesOffset = offset;
  $("examples-note").textContent = page.note;
  const grid = $("examples");
  grid.replaceChildren();
  page.items.forEach((item) => {
    const img = el("img", { src: item.image, alt: item.captions[0] || item.id, title: item.captions[0] || "" });
    img.dataset.index = item.index;
    img.addEventListener("click", () => {
      grid.querySelectorAll("img").forEach((other) => other.classList.remove("selected"));
      img.classList.add("selected");
      setImage(item.image);
      $("caption").value = item.captions[0] || "";
      setCaptionChips(item.captions);
      showError("");
    });
    grid.appendChild(img);
  });
  const end = Math.min(offset + limit, page.total);
  $("examples-range").textContent = page.total ? offset + 1 + "–" + end + " of " + page.total : "";
  $("examples-prev").disabled = offset <= 0;
  $("examples-next").disabled = end >= page.total;
  if (!state.image && page.items.length) grid.querySelector("img").click();
}

async function upload(file) {
  const info = state.info;
  if (info && file.size > info.max_upload_bytes) {
    showError(
      "the upload is too large (" + (file.size / 1e6).toFixed(1) + " MB; the limit is " +
        (info.max_upload_bytes / 1e6).toFixed(0) + " MB)",
    );
    return;
  }
  $("upload-note").textContent = "reading " + file.name + "…";
  try {
    const result = await api("/api/upload", {
      method: "POST",
      headers: { "Content-Type": "application/octet-stream" },
      body: file,
    });
    setImage(result.image);
    $("examples").querySelectorAll("img").forEach((other) => other.classList.remove("selected"));
    setCaptionChips([]);
    const size = result.width ? " (" + result.width + "×" + result.height + ")" : "";
    $("upload-note").textContent =
      file.name + size + " was centre-cropped to a square and resized to 64×64: shown on the right.";
    showError("");
  } catch (error) {
    $("upload-note").textContent = "";
    showError(file.name + ": " + error.message);
  }
}

function setUpTabs() {
  const tabs = { examples: $("tab-examples"), upload: $("tab-upload") };
  Object.entries(tabs).forEach(([name, tab]) =>
    tab.addEventListener("click", () => {
      Object.entries(tabs).forEach(([other, button]) => {
        button.classList.toggle("active", other === name);
        $(other + "-pane").hidden = other !== name;
      });
    }),
  );
  $("examples-prev").addEventListener("click", () => loadExamples(Math.max(state.examplesOffset - 24, 0)));
  $("examples-next").addEventListener("click", () => loadExamples(state.examplesOffset + 24));
  $("upload").addEventListener("change", (event) => {
    const file = event.target.files[0];
    event.target.value = ""; // The same file can be chosen again.
    if (file) upload(file);
  });
}

// --- Completing ------------------------------------------------------------------------------

function request() {
  const number = (id) => {
    const text = $(id).value.trim();
    return /^-?\d+$/.test(text) ? Number(text) : text;
  };
  return {
    image: state.image,
    box: ["x", "y", "w", "h"].map((name) => number("box-" + name)),
    caption: $("caption").value,
    second_caption: $("caption2").value,
    k: number("k"),
    seed: number("seed"),
    dialogue: state.turns.slice(),
  };
}

function strip(result, payload, label) {
  const figures = [el("figure", {}, [el("img", { src: payload.input_with_hole, class: "context", alt: "input with the hole" }), el("figcaption", { text: "input" })])];
  result.samples.forEach((src, i) =>
    figures.push(
      el("figure", {}, [
        el("img", { src, class: "sample", alt: "completion " + (i + 1), "data-i": i }),
        el("figcaption", { text: "#" + (i + 1) }),
      ]),
    ),
  );
  const timing =
    result.samples.length + " completion" + (result.samples.length > 1 ? "s" : "") + " in " +
    result.sample_ms + " ms (" + result.per_sample_ms + " ms each, one batched call)" +
    (result.compiled ? ", including compiling the sampler for this K" : "");
  const name = "inpainting_seed" + payload.seed + "_k" + payload.k + (label ? "_" + label : "") + ".png";
  const head = el("div", { class: "result-head" }, [
    el("span", {
      class: "caption",
      text: (result.turn === null || result.turn === undefined ? "" : "turn " + result.turn + ": ") +
        "“" + (result.caption || "(no caption)") + "”",
    }),
    el("span", { class: "timing muted", text: timing }),
    el("a", { class: "download", href: result.grid, download: name, text: "Download PNG" }),
  ]);
  return el("div", { class: "caption-row" + (label ? " " + label : "") }, [head, el("div", { class: "strip" }, figures)]);
}

function interpolationControls(sent, k) {
  const options = (selected) =>
    Array.from({ length: k }, (_, i) => {
      const option = el("option", { value: i, text: "#" + (i + 1) });
      if (i === selected) option.selected = true;
      return option;
    });
  const a = el("select", { "aria-label": "first sample" }, options(0));
  const b = el("select", { "aria-label": "second sample" }, options(1));
  const go = el("button", { type: "button", text: "Interpolate z" });
  const slider = el("input", { type: "range", min: 0, max: 0, value: 0, hidden: "" });
  const frame = el("img", { alt: "interpolated completion", hidden: "" });
  const note = el("span", { class: "muted" });
  let frames = [];
  slider.addEventListener("input", () => (frame.src = frames[Number(slider.value)]));
  go.addEventListener("click", async () => {
    go.disabled = true;
    note.textContent = "interpolating…";
    try {
      const out = await api("/api/interpolate", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(Object.assign({}, sent, { a: Number(a.value), b: Number(b.value) })),
      });
      frames = out.frames;
      slider.max = frames.length - 1;
      slider.value = 0;
      slider.hidden = false;
      frame.hidden = false;
      frame.src = frames[0];
      note.textContent =
        frames.length + " frames in " + out.ms + " ms" + (out.compiled ? " (including compiling)" : "") +
        ": slide from #" + (out.a + 1) + " to #" + (out.b + 1);
      showError("");
    } catch (error) {
      note.textContent = "";
      showError(error.message);
    }
    go.disabled = false;
  });
  return el("div", { class: "interp" }, [
    el("span", { text: "Latent z between" }), a, el("span", { text: "and" }), b, go, slider, frame, note,
  ]);
}

async function complete() {
  if (state.busy) return;
  showError("");
  if (!state.image) {
    showError("no image: pick an example or upload a photo first");
    return;
  }
  const sent = request();
  const info = state.info;
  const warming = info && !info.compiled_k.includes(sent.k);
  $("progress").textContent = warming
    ? "Warming up: compiling the sampler for K=" + sent.k + " (first use of this K; later requests are fast)…"
    : "Sampling…";
  state.busy = true;
  $("complete").disabled = true;
  const start = performance.now();
  try {
    const payload = await api("/api/complete", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(sent),
    });
    const roundTrip = Math.round(performance.now() - start);
    const result = el("div", { class: "result" }, [
      el("p", {
        class: "muted",
        text:
          "K=" + payload.k + ", seed " + payload.seed + ", hole x=" + payload.box[0] + " y=" + payload.box[1] +
          " w=" + payload.box[2] + " h=" + payload.box[3] + " · round trip " + roundTrip + " ms",
      }),
      strip(payload.first, payload, ""),
    ]);
    result.dataset.input = payload.input;
    if (payload.second) result.appendChild(strip(payload.second, payload, "switched"));
    if (info && info.has_latent && payload.k > 1) result.appendChild(interpolationControls(sent, payload.k));
    $("results").prepend(result);
    $("progress").textContent = "";
  } catch (error) {
    $("progress").textContent = "";
    showError(error.message);
  }
  state.busy = false;
  $("complete").disabled = false;
  refreshInfo();
}

// --- Conversation (runs that read a dialogue) -------------------------------------------------

function showTurns() {
  $("turns").replaceChildren(
    ...state.turns.map((turn) => el("li", { text: turn.question + " — " + turn.answer })),
  );
}

async function addTurn() {
  if (state.busy) return;
  const question = $("question").value.trim();
  const answer = $("answer").value.trim();
  if (!question || !answer) {
    showError("a turn needs a question and an answer");
    return;
  }
  if (state.info && state.turns.length >= state.info.max_turns) {
    showError("at most " + state.info.max_turns + " turns: start over");
    return;
  }
  state.turns.push({ question, answer });
  showTurns();
  $("question").value = "";
  $("answer").value = "";
  await complete();
}

// --- Start -----------------------------------------------------------------------------------

async function start() {
  setUpCanvas();
  setUpTabs();
  draw();
  $("complete").addEventListener("click", complete);
  $("add-turn").addEventListener("click", addTurn);
  $("answer").addEventListener("keydown", (event) => {
    if (event.key === "Enter") addTurn();
  });
  $("clear-turns").addEventListener("click", () => {
    state.turns = [];
    showTurns();
  });
  $("caption").addEventListener("keydown", (event) => {
    if (event.key === "Enter") complete();
  });
  $("new-seed").addEventListener("click", () => ($("seed").value = Math.floor(Math.random() * 1e6)));
  $("k").addEventListener("input", setStatus);
  await refreshInfo();
  if (state.info) {
    const info = state.info;
    $("model").textContent = info.model + " · step " + info.step + " · " + info.workdir;
    $("k").max = info.max_k;
    if (!info.needs_caption) $("caption").placeholder = "optional: this model ignores captions";
    if (info.reads_conversation) {
      $("dialogue").hidden = false;
      $("caption").placeholder = "the context, e.g. a grey background with a blue circle at the top left";
    }
    if (!info.examples_total) $("tab-upload").click();
  }
  loadExamples(0);
}

start();
