// In-browser FER: ONNX Runtime Web runs the exported model on a centre crop of the camera or a photo.
// Preprocessing mirrors fer_utils exactly: gray (PIL's integer luma), 48x48 face, bilinear resize to
// the model size (torch semantics, align_corners=false), scale to 0..1, normalize with the stored mean/std.
"use strict";

const FACE = 48;
const state = { session: null, meta: null, running: false };
const $ = (id) => document.getElementById(id);

function setStatus(text, status) {
  $("status").textContent = text;
  if (status) document.body.dataset.status = status;
}

async function loadModel() {
  ort.env.wasm.wasmPaths = new URL("vendor/", document.baseURI).href; // absolute: module loaders need it
  ort.env.wasm.numThreads = 1; // threads need cross-origin isolation; one thread works on any static host
  state.meta = await (await fetch("model.json")).json();
  state.session = await ort.InferenceSession.create("model.onnx", { executionProviders: ["wasm"] });
  $("camera").disabled = false;
  $("file").disabled = false;
  setStatus(`model ready (${state.meta.arch}, ${state.meta.image_size}px)`, "ready");
}

// Centre square of `source` (video, image or canvas) drawn into the 48x48 face canvas; returns gray pixels.
function faceFrom(source, width, height) {
  const canvas = $("face");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const side = Math.min(width, height);
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(source, (width - side) / 2, (height - side) / 2, side, side, 0, 0, FACE, FACE);
  const rgba = ctx.getImageData(0, 0, FACE, FACE).data;
  const gray = new Float32Array(FACE * FACE);
  for (let i = 0; i < gray.length; i++) {
    gray[i] = (rgba[4 * i] * 19595 + rgba[4 * i + 1] * 38470 + rgba[4 * i + 2] * 7471 + 0x8000) >> 16;
  }
  return gray;
}

// Bilinear resize of a square gray image, as torch.nn.functional.interpolate(align_corners=False)
// (fer_utils resizes floats the same way at evaluation time).
function resizeBilinear(src, inSize, outSize) {
  if (inSize === outSize) return src;
  const out = new Float32Array(outSize * outSize);
  const scale = inSize / outSize;
  const coords = (i) => {
    const s = Math.max((i + 0.5) * scale - 0.5, 0);
    const i0 = Math.min(Math.floor(s), inSize - 1);
    return [i0, Math.min(i0 + 1, inSize - 1), s - i0];
  };
  for (let y = 0; y < outSize; y++) {
    const [y0, y1, ly] = coords(y);
    for (let x = 0; x < outSize; x++) {
      const [x0, x1, lx] = coords(x);
      const top = src[y0 * inSize + x0] * (1 - lx) + src[y0 * inSize + x1] * lx;
      const bottom = src[y1 * inSize + x0] * (1 - lx) + src[y1 * inSize + x1] * lx;
      out[y * outSize + x] = top * (1 - ly) + bottom * ly;
    }
  }
  return out;
}

async function classify(gray) {
  const { image_size: size, mean, std, classes } = state.meta;
  const resized = resizeBilinear(gray, FACE, size);
  const input = new Float32Array(3 * size * size);
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < size * size; i++) input[c * size * size + i] = (resized[i] / 255 - mean[c]) / std[c];
  }
  const started = performance.now();
  const feeds = { [state.session.inputNames[0]]: new ort.Tensor("float32", input, [1, 3, size, size]) };
  const output = await state.session.run(feeds);
  const ms = performance.now() - started;
  const logits = output[state.session.outputNames[0]].data;
  const top = Math.max(...logits);
  const exps = Array.from(logits, (v) => Math.exp(v - top));
  const total = exps.reduce((a, b) => a + b, 0);
  const probabilities = Object.fromEntries(classes.map((name, i) => [name, exps[i] / total]));
  const label = classes[exps.indexOf(Math.max(...exps))];
  return { label, probabilities, ms };
}

function show(result) {
  $("label").textContent = `${result.label} ${(result.probabilities[result.label] * 100).toFixed(0)}%`;
  $("bars").innerHTML = Object.entries(result.probabilities).map(([name, p]) =>
    `<div class="bar${name === result.label ? " top" : ""}"><span>${name}</span>` +
    `<div class="fill" style="width:${(p * 100).toFixed(1)}%"></div><span>${(p * 100).toFixed(1)}%</span></div>`).join("");
  $("timing").textContent = `inference ${result.ms.toFixed(1)} ms`;
  window.ferResult = result; // read by tests and by anyone embedding the page
  document.body.dataset.status = "done";
}

async function onPhoto(file) {
  const image = new Image();
  image.src = URL.createObjectURL(file);
  await image.decode();
  state.running = false;
  $("video").style.display = "none";
  const canvas = $("photo");
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  canvas.getContext("2d").drawImage(image, 0, 0);
  URL.revokeObjectURL(image.src);
  show(await classify(faceFrom(image, image.naturalWidth, image.naturalHeight)));
}

async function startCamera() {
  const video = $("video");
  video.srcObject = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 } });
  await video.play();
  video.style.display = "block";
  $("photo").getContext("2d").clearRect(0, 0, $("photo").width, $("photo").height);
  state.running = true;
  const loop = async () => {
    if (!state.running) return;
    show(await classify(faceFrom(video, video.videoWidth, video.videoHeight)));
    setTimeout(loop, 100);
  };
  loop();
}

$("file").addEventListener("change", (event) => event.target.files[0] && onPhoto(event.target.files[0]));
$("camera").addEventListener("click", () => startCamera().catch((err) => setStatus(`camera: ${err.message}`)));
loadModel().catch((err) => setStatus(`cannot load the model: ${err.message}`, "error"));
