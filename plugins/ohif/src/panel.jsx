// The MONAI Label panel: connect, labels, automatic segmentation, prompts on a chosen segment, save, next sample,
// training. Everything it does to the images goes through `viewer` (viewer.js); every server call through `api`.
import { useEffect, useRef } from 'preact/hooks';

import { api } from './api.js';
import { flip, flipsOnto, nrrdBytes, nrrdGeometry } from './geometry.js';
import { answerMapping, applyMask, labelInfo, mapAnswer, taskLabels } from './labels.js';
import { LoginForm } from './login.jsx';
import { readNrrd } from './nrrd.js';
import { hasStored, usePersisted } from './store.js';
import { trainingText } from './training.js';

const POINT_TYPES = ['deepedit', 'deepgrow'];
const rgb = c => `rgb(${c[0]},${c[1]},${c[2]})`;

function modelsOf(info, types) {
  return Object.entries(info?.models || {})
    .filter(([, m]) => types.includes(m.type) && (m.dimension ?? 3) === 3)
    .map(([name]) => name);
}

function Section({ title, children }) {
  return (
    <div class="dl-section">
      <div class="dl-title">{title}</div>
      {children}
    </div>
  );
}

function Select({ value, options, onChange, testid }) {
  return (
    <select class="dl-select" data-testid={testid} value={value} onChange={e => onChange(e.currentTarget.value)}>
      {options.map(o => <option value={o}>{o}</option>)}
    </select>
  );
}

// the server's answer, on the viewer's grid (axes the server orders the other way round are flipped; a grid
// that differs otherwise is refused); the flips are kept per series for the points sent later
async function answerOnVolume(bytes, s, flipsBySeries) {
  const answer = await readNrrd(bytes);
  const flips = flipsOnto(nrrdGeometry(answer.fields), answer.sizes, s.volume);
  flipsBySeries[s.seriesUid] = flips;
  return { ...answer, data: flip(answer.data, answer.sizes, flips), flips };
}

function serverIjk(p, s, flips) {
  const dims = s.volume.dimensions;
  return p.ijk.map((x, a) => (flips?.[a] ? dims[a] - 1 - x : x));
}

export function Panel({ viewer }) {
  const [info, setInfo] = usePersisted('info', null);
  const [labels, setLabels] = usePersisted('labels', []);
  const [status, setStatus] = usePersisted('status', { text: 'Connecting...', kind: 'info' });
  const [busy, setBusy] = usePersisted('busy', '');
  const [loginNeeded, setLoginNeeded] = usePersisted('loginNeeded', false); // a token refused (expired, revoked)
  const [segModel, setSegModel] = usePersisted('segModel', '');
  const [pointModel, setPointModel] = usePersisted('pointModel', '');
  const [current, setCurrent] = usePersisted('current', null); // the chosen segment's value, 0: background points
  const [inside, setInside] = usePersisted('inside', true);
  const [points, setPoints] = usePersisted('points', []); // {value, inside, ijk, series}
  const [strategy, setStrategy] = usePersisted('strategy', '');
  const [trainModel, setTrainModel] = usePersisted('trainModel', '');
  const [training, setTraining] = usePersisted('training', null);
  const [epochs, setEpochs] = usePersisted('epochs', '');
  const [flipsBySeries] = usePersisted('flips', {});
  const latest = useRef({});
  latest.current = { info, labels, pointModel, current, inside, points, busy };

  const say = (text, kind = 'info') => setStatus({ text, kind });

  async function connect(quiet = false) {
    try {
      const i = await api.info();
      const l = taskLabels(i);
      const keep = (value, options) => (options.includes(value) ? value : options[0] || '');
      setInfo(i);
      setLabels(old => (old.length ? [...old, ...l.filter(x => !old.some(o => o.value === x.value))] : l));
      setSegModel(v => keep(v, modelsOf(i, ['segmentation'])));
      setPointModel(v => keep(v, modelsOf(i, POINT_TYPES)));
      setStrategy(v => keep(v, Object.keys(i.strategies || {})));
      setTrainModel(v => keep(v, Object.keys(i.trainers || {}).filter(t => i.models?.[t])));
      setLoginNeeded(false);
      if (!quiet) say(`Connected: ${i.name}, task ${i.task?.name} (${l.map(x => x.name).join(', ')})`);
      refreshTraining();
    } catch (e) {
      say(e.message, 'error');
      if (e.status === 401) setLoginNeeded(true);
    }
  }

  // one job at a time; every failure lands in the status line
  async function job(name, fn) {
    if (latest.current.busy) return;
    setBusy(name);
    try {
      await fn();
    } catch (e) {
      say(e.message || String(e), 'error');
      console.error(e);
    } finally {
      setBusy('');
    }
  }

  function series() {
    const s = viewer.currentSeries();
    if (!s) throw new Error('Open a CT series in the viewport first');
    return s;
  }

  const runSegmentation = () => job('segment', async () => {
    const s = series();
    say(`Running ${segModel} on the series...`);
    const t0 = performance.now();
    const answer = await answerOnVolume(await api.infer(segModel, s.seriesUid), s, flipsBySeries);
    const l = [...labels];
    const data = mapAnswer(answer.data, answerMapping(info.models[segModel], l));
    setLabels(l);
    await viewer.writeLabelmap(s, l, data);
    say(`${segModel}: done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  });

  async function runPoints(all, retried = false) {
    const { pointModel: model, current: value, labels: l, info: i } = latest.current;
    const s = series();
    const kind = i.models[model].type;
    const known = s.seriesUid in flipsBySeries;
    const flips = flipsBySeries[s.seriesUid];
    all = all.filter(p => p.series === s.seriesUid).map(p => ({ ...p, ijk: serverIjk(p, s, flips) }));
    const byName = v => (v === 0 ? 'background' : l.find(x => x.value === v)?.name);
    let params;
    if (kind === 'deepedit') {
      // every label's points, under its name (the stock clients' format), background as its own list
      params = { background: [] };
      for (const p of all) {
        const key = p.inside ? byName(p.value) : 'background';
        (params[key] = params[key] || []).push(p.ijk);
      }
    } else {
      // one structure: the chosen segment's inside and outside points
      const mine = all.filter(p => p.value === value);
      params = { foreground: mine.filter(p => p.inside).map(p => p.ijk),
                 background: mine.filter(p => !p.inside).map(p => p.ijk), label: byName(value) };
      if (!params.foreground.length) {
        say('Add a point inside the structure first.', 'warn');
        return;
      }
    }
    say(`Running ${model} with ${all.length} point(s)...`);
    const t0 = performance.now();
    const answer = await answerOnVolume(await api.infer(model, s.seriesUid, params), s, flipsBySeries);
    if (!known && answer.flips.some(Boolean) && !retried) {
      // the points were sent in the viewer's order before the server's was known: again, in the server's
      return runPoints(latest.current.points, true);
    }
    const labelmap = await viewer.readLabelmap(s, l);
    if (kind === 'deepedit') {
      labelmap.set(mapAnswer(answer.data, answerMapping(i.models[model], l)));
    } else {
      applyMask(labelmap, answer.data, value);
    }
    await viewer.writeLabelmap(s, l, labelmap);
    say(`${model}: done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }

  // a point placed in the viewport: filed under the chosen segment, then the prompt model runs
  useEffect(() => viewer.onPoint((ijk, s) => {
    const { current: value, inside: isInside, points: before, labels: l, busy: running } = latest.current;
    if (value === null) {
      say('Choose a label (or background) before placing points.', 'warn');
      return null;
    }
    if (running) {
      say('Wait for the answer to the last point.', 'warn');
      return null;
    }
    const point = { value, inside: value === 0 ? false : isInside, ijk, series: s.seriesUid };
    const all = [...before, point];
    setPoints(all);
    job('points', () => runPoints(all));
    const color = !point.inside ? [255, 255, 255] : l.find(x => x.value === value)?.color || [255, 255, 0];
    return { ...point, color };
  }), []);

  const choose = value => {
    setCurrent(value);
    viewer.setActiveSegment(value);
    viewer.enablePoints();
  };

  const clearPoints = () => {
    setPoints([]);
    viewer.clearPoints();
  };

  const save = () => job('save', async () => {
    const s = series();
    const data = await viewer.readLabelmap(s, labels, true);
    if (!data) throw new Error('Nothing to save: segment or draw first');
    say('Saving the label...');
    const r = await api.saveLabel(s.seriesUid, nrrdBytes(data, s.volume), labelInfo(labels));
    say(`Saved as the final label of this series${r?.label ? ` (${r.label})` : ''}.`);
  });

  const nextSample = () => job('next', async () => {
    const r = await api.nextSample(strategy, {});
    if (!r?.id) {
      say('Every image is labelled: no next sample.', 'warn');
      return;
    }
    const study = r.StudyInstanceUID || (await api.studyOf(r.id));
    if (!study) throw new Error(`the next sample ${r.id} is not in the PACS any more`);
    say(`Next sample: series ${r.id}`);
    clearPoints();
    viewer.openSeries(study, r.id);
  });

  async function refreshTraining() {
    try {
      const t = await api.trainStatus();
      setTraining(t && t.status ? t : null);
      return t;
    } catch (e) {
      return null;
    }
  }

  useEffect(() => {
    if (training?.status !== 'RUNNING') return undefined;
    const timer = setInterval(async () => {
      const t = await refreshTraining();
      const i = await api.info().catch(() => null); // the run's epoch (train_stats) while it runs
      if (i) setInfo(i);
      if (t && t.status !== 'RUNNING') {
        const model = t.request?.model || trainModel;
        say(t.status === 'DONE' ? `Training of ${model} finished.` : `Training of ${model} ended ${t.status}.`,
          t.status === 'DONE' ? 'info' : 'error');
        connect(true); // the new model's checksum and the run's figures (train_stats)
      }
    }, 3000);
    return () => clearInterval(timer);
  }, [training?.status]);

  const train = () => job('train', async () => {
    if (training?.status === 'RUNNING') {
      await api.stopTrain();
      say('Training stopped.');
    } else {
      const n = parseInt(epochs, 10);
      await api.train(trainModel, Number.isFinite(n) && n > 0 ? { epochs: n } : {});
      say(`Training of ${trainModel} started.`);
    }
    await refreshTraining();
  });

  useEffect(() => {
    if (!hasStored('info') || !latest.current.info) connect();
  }, []);

  const said = trainingText(training, info?.train_stats?.[trainModel]);
  const segModels = modelsOf(info, ['segmentation']);
  const pointModels = modelsOf(info, POINT_TYPES);
  const trainers = Object.keys(info?.trainers || {}).filter(t => info?.models?.[t]);

  return (
    <div class="dl-panel" data-testid="dl-panel">
      <div class={`dl-status dl-${status.kind}`} data-testid="dl-status">{status.text}</div>
      {loginNeeded && <LoginForm done={() => connect()} />}
      {!info && !loginNeeded && <button class="dl-button" onClick={connect}>Connect</button>}
      {info && (
        <>
          <Section title={`Labels (task ${info.task?.name})`}>
            {labels.map(l => (
              <div class={`dl-label ${current === l.value ? 'dl-chosen' : ''}`} data-testid={`dl-label-${l.name}`}
                onClick={() => choose(l.value)}>
                <span class="dl-swatch" style={{ background: rgb(l.color) }} />
                {l.name} <span class="dl-dim">({l.value})</span>
              </div>
            ))}
            <div class={`dl-label ${current === 0 ? 'dl-chosen' : ''}`} data-testid="dl-label-background"
              onClick={() => choose(0)}>
              <span class="dl-swatch" style={{ background: '#000', border: '1px solid #888' }} />background points
            </div>
          </Section>
          <Section title="Automatic segmentation">
            <Select value={segModel} options={segModels} onChange={setSegModel} testid="dl-seg-model" />
            <button class="dl-button" data-testid="dl-run" disabled={!!busy || !segModel} onClick={runSegmentation}>
              {busy === 'segment' ? 'Running...' : 'Run'}
            </button>
          </Section>
          <Section title="Points on the chosen segment">
            <Select value={pointModel} options={pointModels} onChange={setPointModel} testid="dl-point-model" />
            <div class="dl-row">
              <label><input type="radio" checked={inside} onChange={() => setInside(true)} /> inside</label>
              <label><input type="radio" checked={!inside} onChange={() => setInside(false)} /> outside</label>
              <button class="dl-button dl-small" onClick={clearPoints}>Clear points ({points.length})</button>
            </div>
            <div class="dl-dim">{current === null ? 'Choose a label above, then click in the image.'
              : `Clicks go to ${current === 0 ? 'background' : labels.find(l => l.value === current)?.name}.`}</div>
          </Section>
          <Section title="Label">
            <button class="dl-button" data-testid="dl-save" disabled={!!busy} onClick={save}>Save label</button>
          </Section>
          <Section title="Next sample">
            <Select value={strategy} options={Object.keys(info.strategies || {})} onChange={setStrategy}
              testid="dl-strategy" />
            <button class="dl-button" data-testid="dl-next" disabled={!!busy || !strategy} onClick={nextSample}>
              Next sample
            </button>
          </Section>
          <Section title="Training">
            <Select value={trainModel} options={trainers} onChange={setTrainModel} testid="dl-train-model" />
            <input class="dl-input dl-narrow" data-testid="dl-epochs" type="number" min="1" placeholder="epochs"
              title="Epochs (empty: the trainer's default)" value={epochs} onInput={e => setEpochs(e.currentTarget.value)} />
            <button class="dl-button" data-testid="dl-train" disabled={!!busy || !trainModel} onClick={train}>
              {training?.status === 'RUNNING' ? 'Stop training' : 'Train'}
            </button>
            <div class="dl-dim" data-testid="dl-train-status">
              {said.line}
              {said.failure && <div class="dl-error">{said.failure}</div>}
              {said.outcome && <div data-testid="dl-train-outcome">{said.outcome}</div>}
            </div>
          </Section>
        </>
      )}
    </div>
  );
}
