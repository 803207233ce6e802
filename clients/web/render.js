// stemdaq live view: colour map, limits, images, .npy parsing (no dependencies).
"use strict";

const VIRIDIS = "440154470d6048186a482374472d7b4537814240863e49893b528b375b8d33638d2f6b8e2c728e" +
  "297a8e26828e23898e21918c1f988b1fa08822a78528ae8032b67a3fbc734ec36b5ec96270cf5784d44b98d83e" +
  "addc30c2df23d8e219ece51bfde725";
const NAN_RGB = [40, 40, 40];

function viridisLut() {
  const stops = [];
  for (let i = 0; i < VIRIDIS.length; i += 6) {
    stops.push([0, 2, 4].map((o) => parseInt(VIRIDIS.slice(i + o, i + o + 2), 16)));
  }
  const lut = new Uint8Array(256 * 3);
  for (let i = 0; i < 256; i++) {
    const x = (i / 255) * (stops.length - 1);
    const j = Math.min(stops.length - 2, Math.floor(x));
    const f = x - j;
    for (let c = 0; c < 3; c++) lut[i * 3 + c] = Math.round(stops[j][c] * (1 - f) + stops[j + 1][c] * f);
  }
  return lut;
}
const LUT = viridisLut();

function limits(values) {
  const finite = [];
  for (const v of values) if (Number.isFinite(v)) finite.push(v);
  if (!finite.length) return [0, 1];
  finite.sort((a, b) => a - b);
  const lo = finite[Math.floor(0.01 * (finite.length - 1))];
  let hi = finite[Math.ceil(0.99 * (finite.length - 1))];
  if (!(hi > lo)) hi = lo + 1;
  return [lo, hi];
}

function toImageData(values, width, height, lo, hi) {
  const img = new ImageData(width, height);
  const scale = 255 / (hi - lo);
  for (let i = 0; i < width * height; i++) {
    const v = values[i];
    let rgb;
    if (Number.isFinite(v)) {
      const k = Math.max(0, Math.min(255, Math.floor((v - lo) * scale))) * 3;
      rgb = [LUT[k], LUT[k + 1], LUT[k + 2]];
    } else rgb = NAN_RGB;
    img.data[i * 4] = rgb[0]; img.data[i * 4 + 1] = rgb[1]; img.data[i * 4 + 2] = rgb[2];
    img.data[i * 4 + 3] = 255;
  }
  return img;
}

function fmt(v) {
  if (!Number.isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-2)) return v.toExponential(2);
  return v.toFixed(a >= 100 ? 0 : 2);
}

function niceLength(x) {
  const p = Math.pow(10, Math.floor(Math.log10(x)));
  for (const m of [5, 2, 1]) if (m * p <= x) return m * p;
  return p;
}

function parseNpy(buf) {
  const bytes = new Uint8Array(buf);
  const major = bytes[6];
  const hlen = major === 1 ? new DataView(buf).getUint16(8, true) : new DataView(buf).getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  const head = new TextDecoder().decode(bytes.subarray(start, start + hlen));
  const shape = head.match(/'shape': \(([^)]*)\)/)[1].split(",").filter((s) => s.trim()).map(Number);
  const descr = head.match(/'descr': '([^']*)'/)[1];
  const off = start + hlen;
  const values = descr === "<f8" ? new Float64Array(buf.slice(off)) : new Float32Array(buf.slice(off));
  return { shape, values };
}

