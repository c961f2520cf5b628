// The panel's label bookkeeping: values never renumbered, a prompt's answer redraws one structure only.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { answerMapping, applyMask, labelInfo, mapAnswer, taskLabels } from '../src/labels.js';

const info = { task: { name: 'pancreas', labels: { background: 0, pancreas: 1, tumor: 2 } } };

test('the task labels keep their values and leave background out', () => {
  const labels = taskLabels(info);
  assert.deepEqual(labels.map(l => [l.name, l.value]), [['pancreas', 1], ['tumor', 2]]);
  assert.deepEqual(labelInfo(labels).map(e => [e.name, e.idx]), [['pancreas', 1], ['tumor', 2]]);
});

test("a model's own values are matched to the task's by name; an unknown label gets a free segment", () => {
  const labels = taskLabels(info);
  // a bundle that numbers tumour 1 and pancreas 2, and has a label the task lacks
  const mapping = answerMapping({ labels: { tumor: 1, pancreas: 2, cyst: 3 } }, labels);
  assert.deepEqual([...mapping], [[1, 2], [2, 1], [3, 3]]);
  assert.equal(labels.find(l => l.name === 'cyst').value, 3);
  assert.deepEqual([...mapAnswer(Uint8Array.from([0, 1, 2, 3, 7]), mapping)], [0, 2, 1, 3, 0]);
});

test('a prompt redraws its structure and never erases a label above it', () => {
  // background, pancreas, tumour, pancreas (outside the new mask), background
  const labelmap = Uint8Array.from([0, 1, 2, 1, 0]);
  const mask = Uint8Array.from([1, 1, 1, 0, 0]);
  const changed = applyMask(labelmap, mask, 1);
  assert.deepEqual([...labelmap], [1, 1, 2, 0, 0]);
  assert.equal(changed, 2);
  // the tumour prompt claims pancreas voxels
  applyMask(labelmap, Uint8Array.from([0, 1, 1, 0, 0]), 2);
  assert.deepEqual([...labelmap], [1, 2, 2, 0, 0]);
});
