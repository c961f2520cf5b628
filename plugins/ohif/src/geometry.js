// Where the server's voxels lie against the viewer's volume. Both are on the series' own grid, but the server
// (ITK) and the viewer (cornerstone) each order the axes themselves; an answer is written only when every axis
// runs along the volume's, reversed axes are flipped, and anything else is refused, so a labelmap can never be
// shown (or saved) shifted or mirrored. The saved labelmap carries the volume's geometry for the server to check.

const TOL = 1e-3; // mm, and cosines

function parseVector(text) {
  return text.replace(/[()]/g, ' ').trim().split(/[\s,]+/).map(Number);
}

// NRRD `space directions` "(a,b,c) (d,e,f) (g,h,i)" -> three vectors; `space origin` "(x,y,z)"
export function nrrdGeometry(fields) {
  if (!fields['space directions'] || !fields['space origin']) return null;
  const dirs = fields['space directions'].match(/\([^)]*\)/g)?.map(parseVector);
  const space = (fields.space || 'left-posterior-superior').toLowerCase();
  if (!dirs || dirs.length !== 3 || !['left-posterior-superior', 'lps'].includes(space)) return null;
  return { directions: dirs, origin: parseVector(fields['space origin']) };
}

// The volume's voxel steps in world (LPS) coordinates: axis a moves by direction row a times spacing[a]
export function volumeGeometry(volume) {
  const d = volume.direction;
  const steps = [0, 1, 2].map(a => [0, 1, 2].map(c => d[3 * a + c] * volume.spacing[a]));
  return { directions: steps, origin: Array.from(volume.origin), dimensions: Array.from(volume.dimensions) };
}

const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
const norm = a => Math.sqrt(dot(a, a));
const close = (a, b, tol = TOL) => a.every((x, i) => Math.abs(x - b[i]) <= tol * Math.max(1, Math.abs(b[i])));

// Which answer axes to reverse so that the answer lies on the volume's grid; throws with the reason otherwise
export function flipsOnto(answer, sizes, volume) {
  const v = volumeGeometry(volume);
  if (sizes.join() !== v.dimensions.join()) {
    throw new Error(`the answer is ${sizes.join(' x ')} voxels, the viewer's volume ${v.dimensions.join(' x ')}`);
  }
  if (!answer) return [false, false, false]; // no geometry in the answer: the same order is all we can assume
  const flips = [0, 1, 2].map(a => {
    const cos = dot(answer.directions[a], v.directions[a]) / (norm(answer.directions[a]) * norm(v.directions[a]));
    if (Math.abs(Math.abs(cos) - 1) > TOL || Math.abs(norm(answer.directions[a]) - norm(v.directions[a])) > 0.01) {
      throw new Error(`the answer's axis ${a} does not run along the viewer's (spacing or direction differ)`);
    }
    return cos < 0;
  });
  // the answer's first voxel, after the flips, must be the volume's first voxel
  const first = [0, 1, 2].map(c => answer.origin[c]
    + [0, 1, 2].reduce((s, a) => s + (flips[a] ? answer.directions[a][c] * (sizes[a] - 1) : 0), 0));
  if (!close(first, v.origin, 0.01)) {
    throw new Error(`the answer's origin ${first.map(x => x.toFixed(2))} is not the volume's ${v.origin.map(x => x.toFixed(2))}`);
  }
  return flips;
}

export function flip(data, sizes, flips) {
  if (!flips.some(Boolean)) return data;
  const [nx, ny, nz] = sizes;
  const out = new Uint8Array(data.length);
  for (let z = 0; z < nz; z++) {
    const sz = flips[2] ? nz - 1 - z : z;
    for (let y = 0; y < ny; y++) {
      const sy = flips[1] ? ny - 1 - y : y;
      const src = (sz * ny + sy) * nx;
      const dst = (z * ny + y) * nx;
      if (!flips[0]) out.set(data.subarray(src, src + nx), dst);
      else for (let x = 0; x < nx; x++) out[dst + x] = data[src + nx - 1 - x];
    }
  }
  return out;
}

// A labelmap as an uncompressed NRRD with the volume's geometry (what the server checks a label against)
export function nrrdBytes(data, volume) {
  const v = volumeGeometry(volume);
  const vec = a => `(${a.map(x => Number(x.toFixed(6))).join(',')})`;
  const header = ['NRRD0004', 'type: uint8', 'dimension: 3', 'space: left-posterior-superior',
    `sizes: ${v.dimensions.join(' ')}`, `space directions: ${v.directions.map(vec).join(' ')}`,
    'kinds: domain domain domain', 'endian: little', 'encoding: raw', `space origin: ${vec(v.origin)}`, '', ''].join('\n');
  const head = new TextEncoder().encode(header);
  const out = new Uint8Array(head.length + data.length);
  out.set(head, 0);
  out.set(data, head.length);
  return out;
}
