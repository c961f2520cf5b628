// The app's MONAI Label REST API, as the panel calls it: the same routes and parameters the stock clients use, on
// the server that served this page. Every failure becomes an ApiError whose message is the server's own reason.

const TOKEN_KEY = 'dints-label.token';

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

export function serverUrl() {
  return window.location.origin + '/';
}

export function storedToken() {
  return window.sessionStorage.getItem(TOKEN_KEY) || '';
}

export function storeToken(token) {
  if (token) window.sessionStorage.setItem(TOKEN_KEY, token);
  else window.sessionStorage.removeItem(TOKEN_KEY);
}

function headers(extra = {}) {
  const token = storedToken();
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function reason(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    const detail = body.detail ?? body.message ?? body.error ?? text;
    return typeof detail === 'string' ? detail : JSON.stringify(detail);
  } catch {
    return text.slice(0, 500) || response.statusText;
  }
}

async function call(path, options = {}, what = path) {
  let response;
  try {
    response = await fetch(new URL(path, serverUrl()), { ...options, headers: headers(options.headers) });
  } catch (e) {
    throw new ApiError(`${what}: the server cannot be reached (${e.message})`, 0);
  }
  if (!response.ok) {
    const why = await reason(response);
    const hint = response.status === 401 && what !== 'Log in' ? ' - log in first'
      : response.status === 403 ? ' - your role may not do this' : '';
    throw new ApiError(`${what}: ${why} (HTTP ${response.status})${hint}`, response.status);
  }
  return response;
}

const json = async (path, options, what) => (await call(path, options, what)).json();

export const api = {
  authEnabled: async () => {
    try {
      const r = await fetch(new URL('auth/', serverUrl()));
      return r.ok ? Boolean((await r.json()).enabled) : false;
    } catch {
      return false;
    }
  },
  login: async (username, password) => {
    const form = new FormData();
    form.append('username', username);
    form.append('password', password);
    const body = await json('auth/token', { method: 'POST', body: form }, 'Log in');
    storeToken(body.access_token);
    return body;
  },
  info: () => json('info/', {}, 'Connect'),

  // POST /infer/<model>?image=<series>&output=image: the labelmap as an uncompressed 8-bit NRRD holding the
  // model's own label values (params as the stock OHIF panel sends them)
  infer: async (model, image, params = {}) => {
    const form = new FormData();
    const body = { ...params, result_extension: '.nrrd', result_dtype: 'uint8', result_compress: false,
                   restore_label_idx: false };
    form.append('params', JSON.stringify(body));
    const url = `infer/${encodeURIComponent(model)}?image=${encodeURIComponent(image)}&output=image`;
    const r = await call(url, { method: 'POST', body: form }, `Run ${model}`);
    return new Uint8Array(await r.arrayBuffer());
  },

  // PUT /datastore/label: the labelmap as an NRRD with the viewer's geometry (the server refuses it, 422, unless it
  // lies on the image's grid), with label_info naming each segment index (the server turns them into the task's
  // values and, with a PACS, stores a DICOM SEG)
  saveLabel: async (image, nrrd, labelInfo, tag = 'final') => {
    const form = new FormData();
    form.append('label', new Blob([nrrd], { type: 'application/octet-stream' }), 'label.nrrd');
    form.append('params', JSON.stringify({ label_info: labelInfo }));
    const url = `datastore/label?image=${encodeURIComponent(image)}&tag=${encodeURIComponent(tag)}`;
    return json(url, { method: 'PUT', body: form }, 'Save label');
  },
  // the study of a series, from the PACS through the app's DICOMweb proxy (QIDO)
  studyOf: async seriesUid => {
    const found = await json(`proxy/dicom/qido/series?SeriesInstanceUID=${encodeURIComponent(seriesUid)}`,
      { headers: { Accept: 'application/dicom+json' } }, 'Find the series');
    return found?.[0]?.['0020000D']?.Value?.[0] || null;
  },
  datastore: () => json('datastore/?output=all', {}, 'Datastore'),
  stats: () => json('datastore/?output=stats', {}, 'Datastore'),
  nextSample: (strategy, params = {}) =>
    json(`activelearning/${encodeURIComponent(strategy)}`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(params),
    }, 'Next sample'),

  // training: one model's trainer (POST /train/<model>), its state, its stop
  train: (model, params = {}) =>
    json(`train/${encodeURIComponent(model)}`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(params),
    }, `Train ${model}`),
  trainStatus: () => json('train/', {}, 'Training status'),
  stopTrain: () => json('train/', { method: 'DELETE' }, 'Stop training'),
};
