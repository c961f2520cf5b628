// The server's NRRD answer (`result_extension .nrrd`, uint8, raw or gzip): its size and voxels, first axis
// fastest, which is the order of the viewer's volume (the panel asks for the series' own grid).

async function gunzip(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

export async function readNrrd(bytes) {
  // the header ends at the first empty line
  let end = -1;
  for (let i = 0; i < Math.min(bytes.length - 1, 65536); i++) {
    if (bytes[i] === 10 && bytes[i + 1] === 10) {
      end = i + 2;
      break;
    }
  }
  if (end < 0 || String.fromCharCode(...bytes.slice(0, 4)) !== 'NRRD') {
    throw new Error('the server answered something that is not an NRRD labelmap');
  }
  const fields = {};
  for (const line of new TextDecoder().decode(bytes.slice(0, end)).split('\n').slice(1)) {
    if (!line || line.startsWith('#')) continue;
    const at = line.indexOf(': ');
    if (at > 0) fields[line.slice(0, at).trim().toLowerCase()] = line.slice(at + 2).trim();
  }
  const sizes = (fields.sizes || '').split(/\s+/).map(Number);
  const type = (fields.type || '').toLowerCase();
  if (!['uchar', 'unsigned char', 'uint8', 'uint8_t'].includes(type)) {
    throw new Error(`the labelmap's voxel type is ${fields.type}, not uint8`);
  }
  const encoding = (fields.encoding || 'raw').toLowerCase();
  let data = bytes.slice(end);
  if (encoding === 'gzip' || encoding === 'gz') data = await gunzip(data);
  else if (encoding !== 'raw') throw new Error(`NRRD encoding ${encoding} is not read here`);
  const count = sizes.reduce((a, b) => a * b, 1);
  if (data.length !== count) {
    throw new Error(`the labelmap holds ${data.length} voxels, its header says ${sizes.join(' x ')}`);
  }
  return { sizes, data, fields };
}
