// The "MONAI Label" mode: OHIF's own segmentation mode (its tool groups, toolbar, brushes and segment panel),
// with the CT in the MPR layout (volume viewports: the labelmap is a volume the panel can read and write), the
// series list on the left, our panel and OHIF's labelmap panel on the right, and stored DICOM SEGs reviewable.
import { MODE_ID, PANEL, EXTENSION_ID, ROUTE, extensionUrl } from './ids.js';

const LAYOUT = '@ohif/extension-default.layoutTemplateModule.viewerLayout';
const STACK = '@ohif/extension-default.sopClassHandlerModule.stack';
const SEG_HANDLER = '@ohif/extension-cornerstone-dicom-seg.sopClassHandlerModule.dicom-seg';

function layout() {
  return {
    id: LAYOUT,
    props: {
      leftPanels: ['@ohif/extension-default.panelModule.seriesList'],
      leftPanelResizable: true,
      rightPanels: [`${EXTENSION_ID}.panelModule.${PANEL}`,
        '@ohif/extension-cornerstone.panelModule.panelSegmentationWithToolsLabelMap'],
      rightPanelResizable: true,
      rightPanelClosed: false,
      viewports: [
        { namespace: '@ohif/extension-cornerstone.viewportModule.cornerstone', displaySetsToDisplay: [STACK] },
        { namespace: '@ohif/extension-cornerstone-dicom-seg.viewportModule.dicom-seg', displaySetsToDisplay: [SEG_HANDLER] },
      ],
    },
  };
}

export default {
  id: MODE_ID,
  async modeFactory({ loadModules }) {
    const [segmentationMode, basicMode] = await loadModules(['@ohif/mode-segmentation', '@ohif/mode-basic']);
    const base = segmentationMode.modeInstance;
    // the segmentation mode's own entry also switches the right panel to its segment list whenever a
    // segmentation appears, which would hide our panel at every answer: the basic entry it builds on is used
    const enter = basicMode.modeInstance.onModeEnter;
    return {
      ...base,
      id: MODE_ID,
      routeName: ROUTE,
      displayName: 'MONAI Label',
      routes: [{ path: ROUTE, layoutTemplate: layout }],
      extensions: { ...base.extensions, [extensionUrl()]: '^1.0.0' },
      sopClassHandlers: [STACK, SEG_HANDLER],
      hangingProtocol: 'mpr',
      modeModalities: [['CT']],
      onModeEnter(context) {
        enter.call(this, context);
      },
      onModeExit(context) {
        base.onModeExit.call(this, context);
      },
    };
  },
};
