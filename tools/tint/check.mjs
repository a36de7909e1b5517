// Compiles every WGSL specialisation wgconv creates with Dawn's WGSL compiler (Tint), as
// Chrome does: `node tools/tint/check.mjs DIR [RECORDED]`.
//
// DIR is what `cargo run --example dump_shaders -- DIR` writes: `<kernel>.wgsl`, or where it
// differs `<kernel>.browser.wgsl` (the source a browser gets: with the `enable` directives
// naga does not take), and `<kernel>.specs.json`
// (the override values of the specialisations the tests validate). RECORDED (optional) is
// the file a test run wrote with WGCONV_RECORD_PIPELINES=<file>: every specialisation the
// suite actually compiled, one JSON object per line. For each kernel: createShaderModule and
// getCompilationInfo (errors and warnings), then createComputePipeline with the constants of
// every specialisation inside a validation error scope. Dawn runs with its null backend: no
// GPU is needed (it compiles, it does not run). Exits 1 on any error.
import fs from 'node:fs';
import path from 'node:path';
import { create, globals } from 'webgpu';

Object.assign(globalThis, globals);
const [dir, recorded] = process.argv.slice(2);
if (!dir) {
  console.error('usage: node tools/tint/check.mjs DIR [RECORDED]');
  process.exit(2);
}
const gpu = create(['backend=null']);
const adapter = await gpu.requestAdapter();
const wanted = ['subgroups', 'shader-f16'].filter((f) => adapter.features.has(f));
const device = await adapter.requestDevice({
  requiredFeatures: wanted,
  requiredLimits: {
    maxStorageBuffersPerShaderStage: adapter.limits.maxStorageBuffersPerShaderStage,
    maxComputeWorkgroupStorageSize: adapter.limits.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: adapter.limits.maxComputeInvocationsPerWorkgroup,
    maxComputeWorkgroupSizeX: adapter.limits.maxComputeWorkgroupSizeX,
  },
});
let lost = false;
device.lost.then((info) => {
  lost = true;
  console.error('device lost:', info.message);
});

const specs = new Map();
for (const f of fs.readdirSync(dir).filter((f) => f.endsWith('.specs.json')).sort()) {
  specs.set(f.slice(0, -'.specs.json'.length), JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')));
}
if (recorded) {
  for (const line of fs.readFileSync(recorded, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    const { kernel, constants } = JSON.parse(line);
    if (!specs.has(kernel)) specs.set(kernel, []);
    specs.get(kernel).push(constants);
  }
}

let errors = 0;
let pipelines = 0;
for (const [name, list] of specs) {
  const browser = path.join(dir, `${name}.browser.wgsl`);
  const file = fs.existsSync(browser) ? browser : path.join(dir, `${name}.wgsl`);
  if (!fs.existsSync(file)) {
    console.error(`FAIL ${name}: no ${file}`);
    errors++;
    continue;
  }
  const code = fs.readFileSync(file, 'utf8');
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ code, label: name });
  const info = await module.getCompilationInfo();
  const scope = await device.popErrorScope();
  const bad = info.messages.filter((m) => m.type === 'error');
  for (const m of info.messages) {
    const where = `${path.basename(file)}:${m.lineNum}:${m.linePos}`;
    if (m.type === 'error') console.error(`FAIL ${where}: ${m.message}`);
    else console.log(`${m.type} ${where}: ${m.message}`);
  }
  if (bad.length || scope) {
    if (scope && !bad.length) console.error(`FAIL ${name}: ${scope.message}`);
    errors++;
    continue;
  }
  // Each distinct set of constants once.
  const seen = new Set();
  for (const constants of list) {
    const key = JSON.stringify(Object.entries(constants).sort());
    if (seen.has(key)) continue;
    seen.add(key);
    device.pushErrorScope('validation');
    device.createComputePipeline({
      label: `${name} ${key}`,
      layout: 'auto',
      compute: { module, entryPoint: 'main', constants },
    });
    const e = await device.popErrorScope();
    pipelines++;
    if (e) {
      console.error(`FAIL ${name} ${key}: ${e.message}`);
      errors++;
    }
  }
}
console.log(`tint: ${specs.size} kernels, ${pipelines} pipelines, ${errors} failed (features: ${wanted.join(', ') || 'none'})`);
device.destroy();
process.exit(errors || lost ? 1 : 0);
