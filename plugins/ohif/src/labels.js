// The labels the panel shows and the segments that hold them: one labelmap segmentation per series whose segment
// index is the task's label value (pancreas 1, tumour 2), so a saved labelmap holds the model's label values and
// no label is ever renumbered or dropped. Colours: the server's when /info has them, else a fixed palette.

const PALETTE = [
  [230, 80, 50], [250, 200, 40], [60, 180, 75], [0, 130, 200], [145, 30, 180], [70, 240, 240], [240, 50, 230],
  [210, 245, 60], [250, 190, 212], [0, 128, 128], [170, 110, 40], [128, 0, 0],
];

// Known organs get their usual colours (as 3D Slicer's terminology shows them)
const NAMED = {
  pancreas: [220, 180, 140], tumor: [255, 60, 60], tumour: [255, 60, 60], spleen: [157, 108, 162],
  liver: [221, 130, 101], kidney: [185, 102, 83], stomach: [216, 132, 105],
};

export function colourOf(name, value) {
  return NAMED[String(name).toLowerCase()] || PALETTE[(Number(value) - 1 + PALETTE.length) % PALETTE.length];
}

// The served task's labels (/info `task.labels`: name -> value), background left out, by value
export function taskLabels(info) {
  const labels = info?.task?.labels || {};
  return Object.entries(labels)
    .filter(([name, value]) => name !== 'background' && Number(value) > 0)
    .map(([name, value]) => ({ name, value: Number(value), color: colourOf(name, value) }))
    .sort((a, b) => a.value - b.value);
}

// A model's answer value -> the segment index that shows it. A model's labels are matched to the task's by name
// (its own values may differ, e.g. a bundle's); a label of no task segment gets a free index (added to `labels`).
export function answerMapping(model, labels) {
  const byName = new Map(labels.map(l => [l.name, l.value]));
  const mapping = new Map();
  const own = model?.labels;
  const entries = Array.isArray(own) ? own.map((name, i) => [name, i + 1]) : Object.entries(own || {});
  for (const [name, value] of entries) {
    if (name === 'background' || Number(value) <= 0) continue;
    if (!byName.has(name)) {
      const free = Math.max(0, ...labels.map(l => l.value)) + 1;
      labels.push({ name, value: free, color: colourOf(name, free) });
      byName.set(name, free);
    }
    mapping.set(Number(value), byName.get(name));
  }
  return mapping;
}

// Apply a whole-image answer: every voxel becomes the segment of its model value (0 where none)
export function mapAnswer(data, mapping) {
  const lut = new Uint8Array(256);
  for (const [from, to] of mapping) lut[from] = to;
  const out = new Uint8Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = lut[data[i]];
  return out;
}

// Apply a one-structure answer (a prompt's mask) for segment `index`: the prompt redraws that structure, as the
// stock clients' deepgrow does: its voxels outside the mask become background, the mask's voxels become `index`,
// except those of a label above it (a higher value: the tumour inside the pancreas), which a structure below
// never erases
export function applyMask(labelmap, mask, index) {
  let changed = 0;
  for (let i = 0; i < labelmap.length; i++) {
    const was = labelmap[i];
    const want = mask[i] ? (was > index ? was : index) : was === index ? 0 : was;
    if (want !== was) {
      labelmap[i] = want;
      changed++;
    }
  }
  return changed;
}

// What the server needs to read a saved labelmap: each segment index with its name and colour
export function labelInfo(labels) {
  return labels.map(l => ({ name: l.name, idx: l.value, color: l.color }));
}
