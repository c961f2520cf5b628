// What the panel says about a training run.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { trainingText } from '../src/training.js';

test('the training line says the epoch while running and, at the end, whether the weights are served or why not', () => {
  assert.equal(trainingText(null).line, 'No training yet.');
  const running = trainingText({ status: 'RUNNING', request: { model: 'dints_pancreas' } }, { epoch: 3, total_epochs: 10 });
  assert.equal(running.line, 'dints_pancreas RUNNING epoch 3 / 10');
  const kept = trainingText({ status: 'DONE', request: { model: 'm' } }, {
    status: 'DONE', epoch: 1, training_ids: ['a'], last: { mean_dice: 0.5678 },
    not_published_reason: "validation mean Dice never beat the current model's 0.9" });
  assert.match(kept.outcome, /Dice 0\.568; not published: validation mean Dice never beat/);
  const failed = trainingText({ status: 'ERROR', details: ['a', 'b', 'RuntimeError: out of memory'] });
  assert.equal(failed.failure, 'a b RuntimeError: out of memory');
  assert.equal(trainingText({ status: 'ERROR' }).failure, 'see the server log'); // no details for a non-admin
});
