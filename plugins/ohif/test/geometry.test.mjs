// The server's answer is put on the viewer's grid, or refused; a saved labelmap carries the viewer's geometry.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { flip, flipsOnto, nrrdBytes, nrrdGeometry } from '../src/geometry.js';
import { readNrrd } from '../src/nrrd.js';

// a 3 x 2 x 2 volume, 0.5 x 0.5 x 2 mm, axial, as cornerstone describes it (LPS)
const volume = { dimensions: [3, 2, 2], spacing: [0.5, 0.5, 2], origin: [10, 20, 30], direction: [1, 0, 0, 0, 1, 0, 0, 0, 1] };
const fields = (dirs, origin) => ({ space: 'left-posterior-superior', 'space directions': dirs, 'space origin': origin });

test('an answer on the same grid is taken as it is', () => {
  const g = nrrdGeometry(fields('(0.5,0,0) (0,0.5,0) (0,0,2)', '(10,20,30)'));
  assert.deepEqual(flipsOnto(g, [3, 2, 2], volume), [false, false, false]);
});

test('an answer whose first two axes run the other way (RAS order) is flipped onto the volume', () => {
  const g = nrrdGeometry(fields('(-0.5,0,0) (0,-0.5,0) (0,0,2)', '(11,20.5,30)'));
  const flips = flipsOnto(g, [3, 2, 2], volume);
  assert.deepEqual(flips, [true, true, false]);
  const data = Uint8Array.from({ length: 12 }, (_, i) => i);
  // voxel (x, y, z) of the answer is voxel (2 - x, 1 - y, z) of the volume
  const out = flip(data, [3, 2, 2], flips);
  const at = (x, y, z) => x + 3 * y + 6 * z;
  for (const [x, y, z] of [[0, 0, 0], [1, 0, 1], [2, 1, 0]]) assert.equal(out[at(x, y, z)], data[at(2 - x, 1 - y, z)]);
});

test('an answer on another grid is refused with the reason', () => {
  assert.throws(() => flipsOnto(null, [3, 2, 3], volume), /3 x 2 x 3 voxels/);
  const shifted = nrrdGeometry(fields('(0.5,0,0) (0,0.5,0) (0,0,2)', '(10,20,32)'));
  assert.throws(() => flipsOnto(shifted, [3, 2, 2], volume), /origin/);
  const swapped = nrrdGeometry(fields('(0,0.5,0) (0.5,0,0) (0,0,2)', '(10,20,30)'));
  assert.throws(() => flipsOnto(swapped, [3, 2, 2], volume), /axis 0/);
});

test('a saved labelmap is an NRRD with the volume geometry that reads back as it was', async () => {
  const data = Uint8Array.from({ length: 12 }, (_, i) => i % 3);
  const back = await readNrrd(nrrdBytes(data, volume));
  assert.deepEqual(back.sizes, [3, 2, 2]);
  assert.deepEqual([...back.data], [...data]);
  assert.deepEqual(flipsOnto(nrrdGeometry(back.fields), back.sizes, volume), [false, false, false]);
});

test('a gzip NRRD is read; anything else is refused', async () => {
  const raw = new TextEncoder().encode('NRRD0004\ntype: uint8\ndimension: 1\nsizes: 4\nencoding: gzip\n\n');
  const stream = new Blob([Uint8Array.from([0, 1, 2, 1])]).stream().pipeThrough(new CompressionStream('gzip'));
  const gz = new Uint8Array(await new Response(stream).arrayBuffer());
  const file = new Uint8Array(raw.length + gz.length);
  file.set(raw);
  file.set(gz, raw.length);
  assert.deepEqual([...(await readNrrd(file)).data], [0, 1, 2, 1]);
  await assert.rejects(readNrrd(new TextEncoder().encode('<html>error</html>\n\n')), /not an NRRD/);
  const float = new TextEncoder().encode('NRRD0004\ntype: float\ndimension: 1\nsizes: 1\nencoding: raw\n\n\0\0\0\0');
  await assert.rejects(readNrrd(float), /not uint8/);
});
