// In-browser FER: ONNX Runtime Web finds every face with YuNet (the same ONNX file fer_utils uses),
// levels its eyes, crops it the way FER2013 was cropped and classifies it; nothing is uploaded.
// Preprocessing mirrors fer_utils: gray (PIL's integer luma), 48x48 face, bilinear resize to the model
// size (torch semantics, align_corners=false), scale to 0..1, normalize with the stored mean/std.
// Detector and crop settings come from model.json, written by `fer export --format web`.
"use strict";

const FACE = 48;
const STRIDES = [8, 16, 32];
const state = { classifier: null, detector: null, meta: null, running: false, result: null };
const $ = (id) => document.getElementById(id);

function setStatus(text, status) {
  $("status").textContent = text;
  if (status) document.body.dataset.status = status;
}

// The checks fer_utils makes of every model's description (checkpoint_meta.description_problem),
// for a model.json that may have been edited: what is wrong with it, or null.
const LIMITS = { minSize: 16, maxSize: 1024, maxClasses: 1000, maxName: 64 };
function metaProblem(meta) {
  const { classes, image_size: size, mean, std } = meta;
  if (!Number.isInteger(size) || size < LIMITS.minSize || size > LIMITS.maxSize) {
    return `says image_size ${JSON.stringify(size)}; it must be a whole number from ${LIMITS.minSize} to ${LIMITS.maxSize}`;
  }
  if (!Array.isArray(classes) || classes.length < 2 || classes.length > LIMITS.maxClasses) {
    return `must list 2 to ${LIMITS.maxClasses} class names`;
  }
  const printable = (c) => typeof c === "string" && c.trim() && c.length <= LIMITS.maxName && !/[\p{Cc}\p{Cf}\p{Co}\p{Zl}\p{Zp}]/u.test(c);
  if (!classes.every(printable)) return `has a class name that is not printable text of 1 to ${LIMITS.maxName} characters`;
  if (new Set(classes).size !== classes.length) return "repeats a class name";
  for (const [key, values] of [["mean", mean], ["std", std]]) {
    if (!Array.isArray(values) || ![1, 3].includes(values.length) || !values.every(Number.isFinite)) {
      return `says ${key} ${JSON.stringify(values)}; it must be 1 or 3 finite numbers`;
    }
  }
  if (!std.every((v) => v > 0)) return `says std ${JSON.stringify(std)}; every value must be positive`;
  return null;
}

async function loadModels() {
  ort.env.wasm.wasmPaths = new URL("vendor/", document.baseURI).href; // absolute: module loaders need it
  ort.env.wasm.numThreads = 1; // threads need cross-origin isolation; one thread works on any static host
  state.meta = await (await fetch("model.json")).json();
  const problem = metaProblem(state.meta);
  if (problem) throw new Error(`model.json ${problem}; build the demo again with \`fer export --format web\``);
  if (state.meta.mean.length === 1) state.meta.mean = Array(3).fill(state.meta.mean[0]);
  if (state.meta.std.length === 1) state.meta.std = Array(3).fill(state.meta.std[0]);
  const options = { executionProviders: ["wasm"] };
  state.classifier = await ort.InferenceSession.create("model.onnx", options);
  state.detector = await ort.InferenceSession.create(state.meta.detector.file, options);
  $("camera").disabled = false;
  $("file").disabled = false;
  state.ready = `models ready (${state.meta.arch}, ${state.meta.image_size}px; YuNet detector)`;
  setStatus(state.ready, "ready");
}

// PIL's "L" conversion: (R*19595 + G*38470 + B*7471 + 0x8000) >> 16.
function grayOf(rgba) {
  const gray = new Float32Array(rgba.length / 4);
  for (let i = 0; i < gray.length; i++) {
    gray[i] = (rgba[4 * i] * 19595 + rgba[4 * i + 1] * 38470 + rgba[4 * i + 2] * 7471 + 0x8000) >> 16;
  }
  return gray;
}

function context(canvas) {
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  return ctx;
}

// ---- detection (YuNet) ----

// Runs YuNet on `source` scaled so its longer side is at most `maxSide` (zero padding to the
// network's square input, as OpenCV pads); returns faces in source pixels.
async function runDetector(source, width, height, maxSide) {
  const { input_size: size, score_threshold: threshold } = state.meta.detector;
  const scale = Math.min(1, maxSide / Math.max(width, height), size / Math.max(width, height));
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = size;
  const ctx = context(canvas);
  ctx.fillStyle = "black";
  ctx.fillRect(0, 0, size, size);
  ctx.drawImage(source, 0, 0, width * scale, height * scale);
  const gray = grayOf(ctx.getImageData(0, 0, size, size).data);
  const input = new Float32Array(3 * size * size); // BGR planes; a gray photo has three equal ones
  for (let c = 0; c < 3; c++) input.set(gray, c * size * size);
  const feeds = { [state.detector.inputNames[0]]: new ort.Tensor("float32", input, [1, 3, size, size]) };
  const out = await state.detector.run(feeds);
  const faces = [];
  for (const stride of STRIDES) {
    const cols = size / stride;
    const cls = out[`cls_${stride}`].data, obj = out[`obj_${stride}`].data;
    const bbox = out[`bbox_${stride}`].data, kps = out[`kps_${stride}`].data;
    for (let i = 0; i < cls.length; i++) {
      const score = Math.sqrt(Math.min(Math.max(cls[i], 0), 1) * Math.min(Math.max(obj[i], 0), 1));
      if (score < threshold) continue;
      const row = Math.floor(i / cols), col = i % cols;
      const w = Math.exp(bbox[4 * i + 2]) * stride, h = Math.exp(bbox[4 * i + 3]) * stride;
      const cx = (col + bbox[4 * i]) * stride, cy = (row + bbox[4 * i + 1]) * stride;
      const landmarks = [];
      for (let k = 0; k < 5; k++) {
        landmarks.push([((kps[10 * i + 2 * k] + col) * stride) / scale, ((kps[10 * i + 2 * k + 1] + row) * stride) / scale]);
      }
      faces.push({ x: (cx - w / 2) / scale, y: (cy - h / 2) / scale, w: w / scale, h: h / scale, score, landmarks });
    }
  }
  return nms(faces, state.meta.detector.nms_threshold).filter((f) => Math.min(f.w, f.h) >= state.meta.detector.min_face);
}

function iou(a, b) {
  const ix = Math.max(0, Math.min(a.x + a.w, b.x + b.w) - Math.max(a.x, b.x));
  const iy = Math.max(0, Math.min(a.y + a.h, b.y + b.h) - Math.max(a.y, b.y));
  const inter = ix * iy;
  return inter / (a.w * a.h + b.w * b.h - inter);
}

function nms(faces, threshold) {
  const kept = [];
  for (const face of faces.sort((a, b) => b.score - a.score)) {
    if (kept.every((k) => iou(k, face) <= threshold)) kept.push(face);
  }
  return kept;
}

async function detectFaces(source, width, height) {
  const { max_side: maxSide, retry_side: retrySide } = state.meta.detector;
  let faces = await runDetector(source, width, height, maxSide);
  if (!faces.length && Math.max(width, height) > retrySide) faces = await runDetector(source, width, height, retrySide);
  return faces.sort((a, b) => b.w * b.h - a.w * a.h); // largest first, as fer_utils
}

// ---- cropping (as fer_utils.faces.detection.crop_face and fer_utils.data.images.square_resize) ----

// PIL's resampling of a square gray image (Image.resize): Lanczos (a = 3) when shrinking, bilinear
// when enlarging, separable, with 8-bit rounding between the two passes as PIL does.
function resamplePIL(src, inSize, outSize) {
  if (inSize === outSize) return Float32Array.from(src, (v) => Math.round(v));
  const shrink = inSize > outSize;
  const [radius, kernel] = shrink
    ? [3, (x) => (x === 0 ? 1 : Math.abs(x) >= 3 ? 0 : (3 * Math.sin(Math.PI * x) * Math.sin((Math.PI * x) / 3)) / (Math.PI * Math.PI * x * x))]
    : [1, (x) => Math.max(0, 1 - Math.abs(x))];
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = radius * filterScale;
  const taps = [];
  for (let i = 0; i < outSize; i++) {
    const centre = (i + 0.5) * scale;
    const lo = Math.max(Math.trunc(centre - support + 0.5), 0);
    const hi = Math.min(Math.trunc(centre + support + 0.5), inSize);
    const weights = [];
    for (let j = lo; j < hi; j++) weights.push(kernel((j - centre + 0.5) / filterScale));
    const total = weights.reduce((a, b) => a + b, 0);
    taps.push([lo, weights.map((w) => w / total)]);
  }
  const clip = (v) => Math.min(255, Math.max(0, Math.round(v)));
  const rows = new Float32Array(inSize * outSize); // horizontal pass: inSize rows of outSize
  for (let y = 0; y < inSize; y++) {
    taps.forEach(([lo, w], x) => {
      let acc = 0;
      for (let k = 0; k < w.length; k++) acc += src[y * inSize + lo + k] * w[k];
      rows[y * outSize + x] = clip(acc);
    });
  }
  const out = new Float32Array(outSize * outSize);
  taps.forEach(([lo, w], y) => {
    for (let x = 0; x < outSize; x++) {
      let acc = 0;
      for (let k = 0; k < w.length; k++) acc += rows[(lo + k) * outSize + x] * w[k];
      out[y * outSize + x] = clip(acc);
    }
  });
  return out;
}

// The face's 48x48 gray crop: an n x n patch (n = longer box side x crop_scale) around the box
// centre at the photo's own scale, rotated so the eyes are level, then resized like PIL.
function alignedCrop(source, face) {
  const { crop_scale: cropScale, min_align_degrees: minDegrees } = state.meta.detector;
  const side = Math.max(face.w, face.h) * cropScale;
  const n = Math.max(1, Math.round(side));
  const cx = face.x + face.w / 2, cy = face.y + face.h / 2;
  const [[x1, y1], [x2, y2]] = face.landmarks;
  const angle = Math.atan2(y2 - y1, x2 - x1);
  const ctx = context(Object.assign(document.createElement("canvas"), { width: n, height: n }));
  if (Math.abs(angle) >= (minDegrees * Math.PI) / 180) {
    ctx.translate(n / 2, n / 2);
    ctx.rotate(-angle);
    ctx.translate(-cx, -cy);
    ctx.drawImage(source, 0, 0);
  } else {
    ctx.drawImage(source, -Math.round(cx - side / 2), -Math.round(cy - side / 2)); // whole pixels: no resampling
  }
  return resamplePIL(grayOf(ctx.getImageData(0, 0, n, n).data), n, FACE);
}

// Centre square of a small image taken as the face itself (images up to crop_max_side pixels).
function centreCrop(source, width, height) {
  const side = Math.min(width, height);
  const ctx = context(Object.assign(document.createElement("canvas"), { width: side, height: side }));
  ctx.drawImage(source, -Math.floor((width - side) / 2), -Math.floor((height - side) / 2));
  return resamplePIL(grayOf(ctx.getImageData(0, 0, side, side).data), side, FACE);
}

// ---- classification ----

// Bilinear resize of a square gray image, as torch.nn.functional.interpolate(align_corners=False).
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

// Probabilities for a batch of 48x48 gray faces, in one run of the classifier.
async function classify(crops) {
  const { image_size: size, mean, std, classes } = state.meta;
  const plane = size * size;
  const input = new Float32Array(crops.length * 3 * plane);
  crops.forEach((gray, n) => {
    const resized = resizeBilinear(gray, FACE, size);
    for (let c = 0; c < 3; c++) {
      const offset = (n * 3 + c) * plane;
      for (let i = 0; i < plane; i++) input[offset + i] = (resized[i] / 255 - mean[c]) / std[c];
    }
  });
  const feeds = { [state.classifier.inputNames[0]]: new ort.Tensor("float32", input, [crops.length, 3, size, size]) };
  const logits = (await state.classifier.run(feeds))[state.classifier.outputNames[0]].data;
  if (logits.length !== crops.length * classes.length) {
    throw new Error(`model.onnx gives ${logits.length / crops.length} outputs per face for ${classes.length} classes`);
  }
  return crops.map((_, n) => {
    const row = Array.from(logits.slice(n * classes.length, (n + 1) * classes.length));
    const top = Math.max(...row);
    const exps = row.map((v) => Math.exp(v - top));
    const total = exps.reduce((a, b) => a + b, 0);
    const probabilities = Object.fromEntries(classes.map((name, i) => [name, exps[i] / total]));
    return { label: classes[exps.indexOf(Math.max(...exps))], probabilities };
  });
}

// Every face in an image, video frame or canvas: boxes, landmarks, crops, labels, probabilities.
async function analyse(source, width, height) {
  const started = performance.now();
  let faces, crops;
  if (Math.max(width, height) <= state.meta.detector.crop_max_side) {
    faces = [{ x: 0, y: 0, w: width, h: height, score: null, landmarks: [] }];
    crops = [centreCrop(source, width, height)];
  } else {
    faces = await detectFaces(source, width, height);
    crops = faces.map((face) => alignedCrop(source, face));
  }
  const detected = performance.now();
  const labels = crops.length ? await classify(crops) : [];
  const done = performance.now();
  faces = faces.map((face, i) => ({ ...face, ...labels[i], crop: crops[i] }));
  return {
    faces,
    detected: faces.length === 0 || faces[0].score !== null,
    label: faces[0]?.label ?? null, // the largest face, for a quick look
    probabilities: faces[0]?.probabilities ?? null,
    ms: done - started,
    detect_ms: detected - started,
    classify_ms: done - detected,
  };
}

// ---- display ----

function drawFaces(ctx, faces) {
  const width = Math.max(2, ctx.canvas.width / 300);
  ctx.lineWidth = width;
  ctx.font = `${Math.max(12, ctx.canvas.width / 40)}px system-ui, sans-serif`;
  faces.forEach((face, i) => {
    if (face.score === null) return;
    ctx.strokeStyle = i === 0 ? "#f08c00" : "#4a78d0";
    ctx.strokeRect(face.x, face.y, face.w, face.h);
    const text = `${i + 1} ${face.label} ${(face.probabilities[face.label] * 100).toFixed(0)}%`;
    ctx.fillStyle = ctx.strokeStyle;
    ctx.fillRect(face.x - width / 2, face.y - parseInt(ctx.font) * 1.3, ctx.measureText(text).width + 8, parseInt(ctx.font) * 1.3);
    ctx.fillStyle = "white";
    ctx.fillText(text, face.x + 3, face.y - parseInt(ctx.font) * 0.3);
  });
}

function showFace(face) {
  const ctx = $("face").getContext("2d");
  const pixels = ctx.createImageData(FACE, FACE);
  face.crop.forEach((v, i) => pixels.data.set([v, v, v, 255], 4 * i));
  ctx.putImageData(pixels, 0, 0);
  $("label").textContent = `${face.label} ${(face.probabilities[face.label] * 100).toFixed(0)}%`;
  // class names come from model.json: inserted as text, never as HTML
  $("bars").replaceChildren(...Object.entries(face.probabilities).map(([name, p]) => {
    const bar = element("div", name === face.label ? "bar top" : "bar");
    const fill = element("div", "fill");
    fill.style.width = `${(p * 100).toFixed(1)}%`;
    bar.append(element("span", "", name), fill, element("span", "", `${(p * 100).toFixed(1)}%`));
    return bar;
  }));
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function clearResult(message) {
  state.result = null;
  $("faces").replaceChildren();
  $("bars").replaceChildren();
  $("label").textContent = message;
  $("status").textContent = message; // the status line says what went wrong, not "models ready"
  $("timing").textContent = "";
  const canvas = $("photo");
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  window.ferResult = { faces: [], error: message };
  document.body.dataset.status = "error";
}

function show(result) {
  state.result = result;
  if (state.ready) $("status").textContent = state.ready;
  $("faces").replaceChildren(...result.faces.map((f, i) => {
    const chip = element("button", "chip", `${i + 1}: ${f.label}`);
    chip.dataset.face = String(i);
    return chip;
  }));
  if (result.faces.length) {
    showFace(result.faces[0]);
  } else {
    $("label").textContent = "no face found";
    $("bars").replaceChildren();
  }
  $("timing").textContent = `${result.faces.length} face(s); detection ${result.detect_ms.toFixed(0)} ms, ` +
    `classification ${result.classify_ms.toFixed(0)} ms`;
  // read by tests and by anyone embedding the page (crops left out: they are pixels)
  window.ferResult = { ...result, faces: result.faces.map(({ crop, ...rest }) => rest) };
  document.body.dataset.status = "done";
}

async function onPhoto(file) {
  stopCamera();
  const image = new Image();
  image.src = URL.createObjectURL(file);
  try {
    await image.decode();
  } catch {
    URL.revokeObjectURL(image.src);
    clearResult(`${file.name} is not an image this browser can read`);
    return;
  }
  const canvas = $("photo");
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(image, 0, 0);
  URL.revokeObjectURL(image.src);
  const result = await analyse(image, image.naturalWidth, image.naturalHeight);
  drawFaces(ctx, result.faces);
  show(result);
}

// ---- camera: a live loop with boxes, labels and frames per second ----

function stopCamera() {
  state.running = false;
  const video = $("video");
  if (video.srcObject) video.srcObject.getTracks().forEach((t) => t.stop());
  video.srcObject = null;
}

async function startCamera() {
  const video = $("video");
  video.srcObject = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 } });
  await video.play();
  state.running = true;
  const canvas = $("photo");
  const times = [];
  let frames = 0;
  const loop = async () => {
    if (!state.running) return;
    const width = video.videoWidth, height = video.videoHeight;
    if (width && height) {
      canvas.width = width;
      canvas.height = height;
      const ctx = canvas.getContext("2d");
      ctx.drawImage(video, 0, 0);
      const result = await analyse(canvas, width, height);
      drawFaces(ctx, result.faces);
      frames += 1;
      times.push(performance.now());
      while (times.length > 1 && times[times.length - 1] - times[0] > 2000) times.shift();
      const fps = times.length > 1 ? ((times.length - 1) * 1000) / (times[times.length - 1] - times[0]) : 0;
      ctx.fillStyle = "rgba(0,0,0,.6)";
      ctx.fillRect(0, height - 28, 110, 28);
      ctx.fillStyle = "white";
      ctx.font = "16px system-ui, sans-serif";
      ctx.fillText(`${fps.toFixed(1)} fps`, 8, height - 9);
      show(result);
      window.ferLive = { frames, fps, faces: window.ferResult.faces };
    }
    requestAnimationFrame(loop);
  };
  loop();
}

$("faces").addEventListener("click", (event) => {
  const index = event.target.dataset.face;
  if (index !== undefined && state.result) showFace(state.result.faces[Number(index)]);
});
$("file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) onPhoto(file).catch((err) => clearResult(`${file.name}: ${err.message}`));
});
$("camera").addEventListener("click", () => startCamera().catch((err) => setStatus(`camera: ${err.message}`)));
loadModels().catch((err) => setStatus(`cannot load the models: ${err.message}`, "error"));
