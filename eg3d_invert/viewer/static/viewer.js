// The eg3d-invert viewer page: live renders from the server, a WebGL view of the mesh, latent edits.
//
// Renders: one request in flight at a time; while it runs, only the newest wish is kept, so a drag
// shows the freshest preview the server can make instead of queueing stale ones. A full frame is
// asked for once the camera or an edit has been still for a moment (it costs seconds on a CPU).
import * as THREE from 'three';
import { GLTFLoader } from 'three/addons/loaders/GLTFLoader.js';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';

const $ = (id) => document.getElementById(id);
const SLIDERS = 8;          // SeFa directions shown (strongest first)
const SEFA_RANGE = 5;       // slider range in standard deviations
const MAX_PITCH = 60;       // EG3D's training views stay well within this
const DEG_PER_PIXEL = 0.4;
const KEY_STEP = 5;
const FULL_DELAY_MS = 350;  // stillness before a full frame is asked for (longer where full frames are slow)

const state = {
  results: [], current: null, yaw: 0, pitch: 0, kind: 'image', tab: 'live',
  edit: { sefa: new Map(), psi: 1, other: '', blend: 0, layers: 'all' },
  client: Math.random().toString(36).slice(2) + Date.now().toString(36),
  seq: 0,
  fullSeconds: 0,  // how long the last full frame took to render
};
// Every frame shown, for tests and for anyone curious: {seq, quality, kind, yaw, pitch, width, height, seconds}.
window.viewerLog = [];

// --- helpers ----------------------------------------------------------------------------------

function status(message, error = false) {
  const el = $('status');
  el.textContent = message;
  el.dataset.error = String(error);
}

async function errorText(response) {
  try { return (await response.json()).error; } catch { return `${response.status} ${response.statusText}`; }
}

const fmt = (v) => (v >= 0 ? '+' : '−') + Math.abs(v).toFixed(1) + '°';

function showReadout() {
  $('readout').textContent = `yaw ${fmt(state.yaw)}  pitch ${fmt(state.pitch)}`;
}

function wrapYaw(y) { return ((y + 180) % 360 + 360) % 360 - 180; }

function editParams() {
  const p = {};
  const sefa = [...state.edit.sefa].filter(([, v]) => v !== 0).map(([k, v]) => `${k}:${v}`);
  if (sefa.length) p.sefa = sefa.join(',');
  if (state.edit.psi !== 1) p.psi = String(state.edit.psi);
  if (state.edit.other && state.edit.blend > 0) {
    p.other = state.edit.other; p.blend = String(state.edit.blend); p.layers = state.edit.layers;
  }
  return p;
}

// --- live view ----------------------------------------------------------------------------------

let inflight = false;
let wanted = null;
let fullTimer = null;

function request(quality) {
  wanted = quality;  // the newest wish replaces an older one that has not been sent
  if (!inflight) pump();
}

function scheduleFull(delay = null) {
  // A full frame cannot be interrupted once the server has started it, and on a CPU it takes
  // seconds: wait a little longer for stillness when they are slow, so a quick re-grab still
  // gets previews at once.
  if (delay === null) delay = Math.min(1500, Math.max(FULL_DELAY_MS, 250 * state.fullSeconds));
  clearTimeout(fullTimer);
  fullTimer = setTimeout(() => request('full'), delay);
}

async function pump() {
  if (wanted === null || !state.current) return;
  const quality = wanted;
  wanted = null;
  inflight = true;
  const shot = { seq: ++state.seq, quality, kind: state.kind, yaw: +state.yaw.toFixed(2), pitch: +state.pitch.toFixed(2) };
  const query = new URLSearchParams({ result: state.current.id, yaw: shot.yaw, pitch: shot.pitch, kind: shot.kind,
                                      quality, ...editParams(), client: state.client, seq: shot.seq });
  try {
    const response = await fetch(`/api/render?${query}`);
    if (response.status === 200) {
      shot.seconds = +(response.headers.get('X-Render-Seconds') || 0);
      if (quality === 'full') state.fullSeconds = shot.seconds;
      await show(await response.blob(), shot);
      if ($('status').dataset.error === 'true') status('');  // a frame came: the error is over
    } else if (response.status !== 204) {  // 204: dropped because a newer request came
      status(await errorText(response), true);
    }
  } catch (err) {
    status(`the viewer server is not reachable (${err.message})`, true);
  }
  inflight = false;
  pump();
}

function show(blob, shot) {
  const img = $('frame');
  const url = URL.createObjectURL(blob);
  return new Promise((resolve) => {
    img.onload = () => {
      const old = img.dataset.url;
      if (old) URL.revokeObjectURL(old);
      img.dataset.url = url;
      Object.assign(shot, { width: img.naturalWidth, height: img.naturalHeight });
      img.dataset.seq = shot.seq;
      img.dataset.quality = shot.quality;
      img.dataset.kind = shot.kind;
      $('quality').textContent = `${shot.quality} ${shot.width}×${shot.height}, ${shot.seconds.toFixed(2)} s`;
      window.viewerLog.push(shot);
      resolve();
    };
    img.onerror = () => { URL.revokeObjectURL(url); status('the server sent an unreadable image', true); resolve(); };
    img.src = url;
  });
}

function moveCamera(dyaw, dpitch) {
  state.yaw = wrapYaw(state.yaw + dyaw);
  state.pitch = Math.max(-MAX_PITCH, Math.min(MAX_PITCH, state.pitch + dpitch));
  showReadout();
  request('preview');
}

function setupLive() {
  const stage = $('stage');
  let drag = null;
  stage.addEventListener('pointerdown', (e) => {
    drag = { x: e.clientX, y: e.clientY };
    stage.setPointerCapture(e.pointerId);
    clearTimeout(fullTimer);
    stage.focus();
  });
  stage.addEventListener('pointermove', (e) => {
    if (!drag) return;
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (dx === 0 && dy === 0) return;
    drag = { x: e.clientX, y: e.clientY };
    // The head follows the pointer: dragging right turns its face to the right (camera yaw goes
    // toward the subject's right), dragging down shows it from above (camera pitch up).
    moveCamera(-dx * DEG_PER_PIXEL, dy * DEG_PER_PIXEL);
  });
  const end = () => { if (drag) { drag = null; scheduleFull(); } };
  stage.addEventListener('pointerup', end);
  stage.addEventListener('pointercancel', end);

  document.addEventListener('keydown', (e) => {
    if (state.tab !== 'live' || e.target.closest('input, select, textarea, button')) return;
    const step = { ArrowLeft: [KEY_STEP, 0], ArrowRight: [-KEY_STEP, 0], ArrowUp: [0, -KEY_STEP],
                   ArrowDown: [0, KEY_STEP] }[e.key];
    if (!step) return;
    e.preventDefault();
    moveCamera(...step);
    scheduleFull();
  });

  for (const radio of document.querySelectorAll('input[name="kind"]')) {
    radio.addEventListener('change', () => { state.kind = radio.value; request('full'); });
  }
}

// --- edits --------------------------------------------------------------------------------------

function slider(id, label, min, max, step, value, unit) {
  const wrap = document.createElement('label');
  wrap.className = 'slider';
  wrap.innerHTML = `<span>${label}</span><input id="${id}" type="range" min="${min}" max="${max}" step="${step}" ` +
                   `value="${value}"><output for="${id}"></output>`;
  wrap.querySelector('output').textContent = `${(+value).toFixed(1)}${unit}`;
  return wrap;
}

function bindSlider(input, onValue, digits = 2, unit = '') {
  const out = input.parentElement.querySelector('output');
  input.addEventListener('input', () => {
    out.textContent = `${(+input.value).toFixed(digits)}${unit}`;
    onValue(+input.value);
    invalidateMesh();
    request('preview');
  });
  input.addEventListener('change', () => scheduleFull(0));
}

function buildEditPanel() {
  const r = state.current;
  const box = $('sefa');
  box.textContent = '';
  const count = Math.min(SLIDERS, r.directions.length);
  for (let k = 0; k < count; k++) {
    const el = slider(`sefa-${k}`, `direction ${k + 1}`, -SEFA_RANGE, SEFA_RANGE, 0.1, 0, 'σ');
    box.append(el);
    bindSlider(el.querySelector('input'), (v) => state.edit.sefa.set(k, v), 1, 'σ');
  }
  const other = $('other');
  other.textContent = '';
  other.append(new Option('(none)', ''));
  for (const o of state.results) {
    if (o.id !== r.id && o.checkpoint === r.checkpoint) other.append(new Option(o.name, o.id));
  }
  other.disabled = other.options.length < 2;
  resetEdit(false);
}

function resetEdit(render = true) {
  state.edit = { sefa: new Map(), psi: 1, other: '', blend: 0, layers: 'all' };
  for (const input of $('sefa').querySelectorAll('input')) {
    input.value = 0;
    input.parentElement.querySelector('output').textContent = '0.0σ';
  }
  $('psi').value = 1; $('psi').parentElement.querySelector('output').textContent = '1.00';
  $('blend').value = 0; $('blend').parentElement.querySelector('output').textContent = '0.00';
  $('other').value = ''; $('layers').value = 'all';
  $('blend').disabled = $('layers').disabled = true;
  invalidateMesh();
  if (render) request('full');
}

function setupEdit() {
  bindSlider($('psi'), (v) => { state.edit.psi = v; });
  bindSlider($('blend'), (v) => { state.edit.blend = v; });
  $('other').addEventListener('change', () => {
    state.edit.other = $('other').value;
    $('blend').disabled = $('layers').disabled = !state.edit.other;
    invalidateMesh();
    if (state.edit.blend > 0) request('full');
  });
  $('layers').addEventListener('change', () => {
    state.edit.layers = $('layers').value;
    invalidateMesh();
    if (state.edit.blend > 0) request('full');
  });
  $('reset').addEventListener('click', () => resetEdit());
  $('save').addEventListener('click', save);
}

async function save() {
  const button = $('save');
  button.disabled = true;
  status('saving…');
  try {
    const body = { result: state.current.id, yaw: +state.yaw.toFixed(2), pitch: +state.pitch.toFixed(2),
                   kind: state.kind, ...editParams() };
    const response = await fetch('/api/save', { method: 'POST', headers: { 'Content-Type': 'application/json' },
                                                body: JSON.stringify(body) });
    if (response.ok) {
      const saved = await response.json();
      button.dataset.saved = saved.folder;
      status(`saved ${saved.files.join(', ')} in ${saved.folder}`);
    } else {
      status(await errorText(response), true);
    }
  } catch (err) {
    status(`save failed: ${err.message}`, true);
  }
  button.disabled = false;
}

// --- 3D view --------------------------------------------------------------------------------------

let three = null;

function setupThree() {
  const canvas = $('mesh-canvas');
  // preserveDrawingBuffer: the canvas can be read back (screenshots, tests) after a frame.
  const renderer = new THREE.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
  renderer.setPixelRatio(1);
  renderer.setSize(canvas.clientWidth || 512, canvas.clientHeight || 512, false);
  renderer.setClearColor(0x222222);
  const scene = new THREE.Scene();
  scene.add(new THREE.HemisphereLight(0xffffff, 0x404040, 2.0));
  const sun = new THREE.DirectionalLight(0xffffff, 1.5);
  sun.position.set(1, 1.5, 2);
  scene.add(sun);
  const camera = new THREE.PerspectiveCamera(30, 1, 0.01, 100);
  camera.position.set(0, 0, 3);
  const controls = new OrbitControls(camera, canvas);
  const draw = () => renderer.render(scene, camera);
  controls.addEventListener('change', draw);
  three = { renderer, scene, camera, controls, draw, mesh: null, key: null };
}

function meshQuery() {
  const p = { result: state.current.id, ...editParams() };
  const level = $('mesh-level').value;
  if (level !== '') p.level = level;
  return new URLSearchParams(p).toString();
}

function invalidateMesh() {
  if (three) three.key = null;
}

async function showMesh() {
  if (!three) setupThree();
  const key = meshQuery();
  if (three.key === key) { three.draw(); return; }
  const canvas = $('mesh-canvas');
  canvas.dataset.meshState = 'loading';
  const edited = Object.keys(editParams()).length > 0 || $('mesh-level').value !== '';
  $('mesh-status').textContent = edited || !state.current.saved_mesh
    ? 'extracting the mesh of this latent…' : `loading ${state.current.saved_mesh}…`;
  try {
    const response = await fetch(`/api/mesh?${key}`);
    if (!response.ok) throw new Error(await errorText(response));
    const gltf = await new GLTFLoader().parseAsync(await response.arrayBuffer(), '');
    if (three.mesh) three.scene.remove(three.mesh);
    let vertices = 0;
    gltf.scene.traverse((o) => {
      if (!o.isMesh) return;
      const colors = o.geometry.getAttribute('color');
      if (colors) {
        // Mesh files hold sRGB vertex colours; three.js lights in linear space.
        const linear = new Float32Array(colors.count * 3);
        const c = new THREE.Color();
        for (let i = 0; i < colors.count; i++) {
          c.setRGB(colors.getX(i), colors.getY(i), colors.getZ(i), THREE.SRGBColorSpace);
          linear.set([c.r, c.g, c.b], 3 * i);
        }
        o.geometry.setAttribute('color', new THREE.BufferAttribute(linear, 3));
      }
      if (!o.geometry.getAttribute('normal')) o.geometry.computeVertexNormals();
      o.material = new THREE.MeshStandardMaterial({ vertexColors: !!colors, roughness: 0.85, metalness: 0,
                                                    side: THREE.DoubleSide });
      vertices += o.geometry.getAttribute('position').count;
    });
    three.mesh = gltf.scene;
    three.scene.add(three.mesh);
    const box = new THREE.Box3().setFromObject(three.mesh);
    const center = box.getCenter(new THREE.Vector3());
    const radius = box.getSize(new THREE.Vector3()).length() / 2 || 1;
    // The head faces +z in EG3D's frame: look at it from the front.
    three.camera.position.set(center.x, center.y, center.z + radius / Math.tan(THREE.MathUtils.degToRad(15)));
    three.camera.near = radius / 100; three.camera.far = radius * 100;
    three.camera.updateProjectionMatrix();
    three.controls.target.copy(center);
    three.controls.update();
    three.key = key;
    three.draw();
    canvas.dataset.meshState = 'ready';
    canvas.dataset.vertices = String(vertices);
    $('mesh-status').textContent = `${vertices.toLocaleString()} vertices`;
  } catch (err) {
    canvas.dataset.meshState = 'error';
    $('mesh-status').textContent = '';
    status(`mesh: ${err.message}`, true);
  }
}

function setTab(tab) {
  state.tab = tab;
  $('tab-live').setAttribute('aria-selected', String(tab === 'live'));
  $('tab-3d').setAttribute('aria-selected', String(tab === '3d'));
  $('live-panel').hidden = tab !== 'live';
  $('mesh-panel').hidden = tab !== '3d';
  if (tab === '3d') showMesh();
}

// --- results ----------------------------------------------------------------------------------------

function selectResult(id) {
  const r = state.results.find((x) => x.id === id);
  state.current = r;
  document.title = `${r.name} · eg3d-invert viewer`;
  $('title').textContent = `${r.name} (${r.directory})`;
  for (const b of $('results').querySelectorAll('button')) b.setAttribute('aria-current', String(b.dataset.id === id));
  state.yaw = wrapYaw(r.camera.yaw);
  state.pitch = Math.max(-MAX_PITCH, Math.min(MAX_PITCH, r.camera.pitch));
  showReadout();
  buildEditPanel();
  invalidateMesh();
  if (state.tab === '3d') showMesh();
  request('full');
}

async function main() {
  setupLive();
  setupEdit();
  $('tab-live').addEventListener('click', () => setTab('live'));
  $('tab-3d').addEventListener('click', () => setTab('3d'));
  $('mesh-reload').addEventListener('click', () => { invalidateMesh(); showMesh(); });
  const response = await fetch('/api/results');
  if (!response.ok) { status(await errorText(response), true); return; }
  state.results = await response.json();
  const list = $('results');
  for (const r of state.results) {
    const item = document.createElement('li');
    const button = document.createElement('button');
    button.type = 'button';
    button.dataset.id = r.id;
    const thumb = new Image();
    thumb.src = r.thumbnail;
    thumb.alt = '';
    const label = document.createElement('span');
    label.textContent = r.name;
    button.append(thumb, label);
    button.addEventListener('click', () => selectResult(r.id));
    item.append(button);
    list.append(item);
  }
  $('results-panel').hidden = state.results.length < 2;
  selectResult(state.results[0].id);
}

main();
