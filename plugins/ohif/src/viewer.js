// Everything the panel does to OHIF: the series in view and its volume, the labelmap segmentation holding the
// labels (segment index = the task's label value), the point tool, and opening another study in place.
// OHIF 3.13's services and its own cornerstone instances are used (never a bundled copy: their state is
// per instance); they are handed over by the extension's preRegistration.

const POINT_TOOL = 'Probe';
const SEGMENTATION_LABEL = 'MONAI Label';
const ctx = { services: null, commands: null, cs: null, cst: null };
const state = { pointHandler: null, listening: false, points: [], volumeIds: {} }; // points: {uid, value, inside}

export function initViewer({ servicesManager, commandsManager, extensionManager }) {
  const common = extensionManager.getModuleEntry('@ohif/extension-cornerstone.utilityModule.common');
  const { cornerstone, cornerstoneTools } = common.exports.getCornerstoneLibraries();
  Object.assign(ctx, { services: servicesManager.services, commands: commandsManager, cs: cornerstone, cst: cornerstoneTools });
}

function activeViewportId() {
  return ctx.services.viewportGridService.getActiveViewportId();
}

function volumeOf(ds) {
  return ctx.cs.cache.getVolume(`${ds.volumeLoaderSchema ?? 'cornerstoneStreamingImageVolume'}:${ds.displaySetInstanceUID}`);
}

// The CT series in the active viewport (a SEG there stands for the series it references)
export function currentSeries() {
  if (!ctx.services) return null;
  const { viewportGridService, displaySetService } = ctx.services;
  const vp = viewportGridService.getState().viewports.get(activeViewportId());
  let ds = vp?.displaySetInstanceUIDs?.length ? displaySetService.getDisplaySetByUID(vp.displaySetInstanceUIDs[0]) : null;
  if (ds?.referencedDisplaySetInstanceUID) ds = displaySetService.getDisplaySetByUID(ds.referencedDisplaySetInstanceUID);
  if (!ds) return null;
  const volume = volumeOf(ds);
  if (!volume) return null;
  return { studyUid: ds.StudyInstanceUID, seriesUid: ds.SeriesInstanceUID, displaySet: ds, volume,
           segmentationId: `dints-label-${ds.SeriesInstanceUID}` };
}

function viewportsShowing(ds) {
  const { viewportGridService } = ctx.services;
  return [...viewportGridService.getState().viewports.values()]
    .filter(vp => vp.displaySetInstanceUIDs?.includes(ds.displaySetInstanceUID))
    .map(vp => vp.viewportId);
}

function segmentationOf(s) {
  return ctx.services.segmentationService.getSegmentation(s.segmentationId);
}

// One labelmap segmentation per series, with a segment per label (index = value), shown in every viewport of
// the series in the labels' colours; segments of labels that appeared since (a bundle's) are added
async function ensureSegmentation(s, labels) {
  const { segmentationService } = ctx.services;
  const segments = Object.fromEntries(labels.map((l, i) => [l.value, {
    segmentIndex: l.value, label: l.name, active: i === 0, locked: false }]));
  if (!segmentationOf(s)) {
    await segmentationService.createLabelmapForDisplaySet(s.displaySet, {
      segmentationId: s.segmentationId, label: SEGMENTATION_LABEL, segments });
  } else {
    const have = segmentationOf(s).segments || {};
    for (const l of labels) {
      if (!have[l.value]) segmentationService.addSegment(s.segmentationId, { segmentIndex: l.value, label: l.name });
    }
  }
  for (const viewportId of viewportsShowing(s.displaySet)) {
    const shown = segmentationService.getSegmentationRepresentations(viewportId, { segmentationId: s.segmentationId });
    if (!shown?.length) await segmentationService.addSegmentationRepresentation(viewportId, { segmentationId: s.segmentationId });
    for (const l of labels) segmentationService.setSegmentColor(viewportId, s.segmentationId, l.value, [...l.color, 255]);
  }
}

// The labelmap's volume. cornerstone 5 makes it when the segmentation is shown in a volume viewport, but its
// later bookkeeping can drop the volume's id from the segmentation (the volume stays, shares the slices the
// brushes paint and is what is rendered): the id is kept here the first time it is seen.
function labelmapVolume(s) {
  const lm = ctx.services.segmentationService.getLabelmapVolume(s.segmentationId);
  if (lm) {
    state.volumeIds[s.segmentationId] = lm.volumeId;
    return lm;
  }
  const kept = state.volumeIds[s.segmentationId] && ctx.cs.cache.getVolume(state.volumeIds[s.segmentationId]);
  if (kept) return kept;
  throw new Error('the labelmap is not a volume: open the series in the MPR layout');
}

// what the panel's commands give to scripts (and the end-to-end test): the labelmap of a series in view
export function labelmapOf(seriesUid) {
  const s = currentSeries();
  if (!s || s.seriesUid !== seriesUid || !segmentationOf(s)) return null;
  const lm = labelmapVolume(s);
  return { dimensions: Array.from(lm.dimensions), data: lm.voxelManager.getCompleteScalarDataArray() };
}

export async function writeLabelmap(s, labels, data) {
  await ensureSegmentation(s, labels);
  const lm = labelmapVolume(s);
  lm.voxelManager.setCompleteScalarDataArray(data);
  ctx.cst.segmentation.triggerSegmentationEvents.triggerSegmentationDataModified(s.segmentationId);
  ctx.services.cornerstoneViewportService.getRenderingEngine()?.render();
}

// The labelmap as it is now (brush edits included); null when there is none and `existing` is asked for
export async function readLabelmap(s, labels, existing = false) {
  if (!segmentationOf(s)) {
    if (existing) return null;
    await ensureSegmentation(s, labels);
  }
  return labelmapVolume(s).voxelManager.getCompleteScalarDataArray();
}

export function setActiveSegment(value) {
  const s = currentSeries();
  if (s && value > 0 && segmentationOf(s)) ctx.services.segmentationService.setActiveSegment(s.segmentationId, value);
}

// ---- points -----------------------------------------------------------------------------------------------
export function enablePoints() {
  const { toolGroupService } = ctx.services;
  for (const toolGroupId of toolGroupService.getToolGroupIds()) {
    const group = toolGroupService.getToolGroup(toolGroupId);
    if (!group) continue;
    if (!group.hasTool?.(POINT_TOOL)) toolGroupService.addToolsToToolGroup(toolGroupId, { passive: [{ toolName: POINT_TOOL }] });
    ctx.commands.runCommand('setToolActive', { toolName: POINT_TOOL, toolGroupId });
  }
}

function render() {
  ctx.services.cornerstoneViewportService.getRenderingEngine()?.render();
}

function removePoint(uid) {
  ctx.cst.annotation.state.removeAnnotation(uid);
}

// handler(ijk) -> {value, inside, color} to keep the point (coloured as its label), or null to drop it
export function onPoint(handler) {
  state.pointHandler = handler;
  if (state.listening || !ctx.cs) return;
  state.listening = true;
  ctx.cs.eventTarget.addEventListener(ctx.cst.Enums.Events.ANNOTATION_COMPLETED, event => {
    const annotation = event.detail?.annotation;
    if (!annotation || annotation.metadata?.toolName !== POINT_TOOL || !state.pointHandler) return;
    const s = currentSeries();
    const world = annotation.data?.handles?.points?.[0];
    if (!s || !world) return;
    const ijk = Array.from(s.volume.imageData.worldToIndex(world)).map(Math.round);
    const kept = state.pointHandler(ijk, s);
    if (!kept) {
      removePoint(annotation.annotationUID);
    } else {
      const c = kept.color;
      ctx.cst.annotation.config.style.setAnnotationStyles(annotation.annotationUID, { color: `rgb(${c[0]},${c[1]},${c[2]})` });
      state.points.push({ uid: annotation.annotationUID, ...kept });
    }
    render();
  });
}

export function clearPoints() {
  for (const p of state.points) removePoint(p.uid);
  state.points = [];
  if (ctx.services) render();
}

// ---- another study, in place (the page, and with it the panel's connection, stays) -----------------------------
export function openSeries(study, seriesUid) {
  clearPoints();
  ctx.commands.runCommand('navigateHistory', {
    to: `/monai-label?StudyInstanceUIDs=${study}&SeriesInstanceUIDs=${seriesUid}`,
  });
}
