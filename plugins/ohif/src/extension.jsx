// The MONAI Label extension: one right-hand panel (panel.jsx). OHIF renders panels with its own React, which it
// does not expose; the panel is therefore a React element built by hand (a div with a stable ref) that Preact
// renders into. OHIF unmounts panels often (tab switch, study change): their state lives in store.js.
import { render } from 'preact';

import { EXTENSION_ID, PANEL } from './ids.js';
import { authorizationHeader, loginGate } from './login.jsx';
import { Panel } from './panel.jsx';
import { STYLE } from './style.js';
import * as viewer from './viewer.js';

const REACT_ELEMENT = Symbol.for('react.element'); // React 18 (OHIF 3.13 ships 18.3.1)
let host = null;

function hostRef(node) {
  if (node) {
    host = node;
    render(<Panel viewer={viewer} />, node);
  } else if (host) {
    render(null, host);
    host = null;
  }
}

function MonaiLabelPanel() {
  return { $$typeof: REACT_ELEMENT, type: 'div', key: null, ref: hostRef, _owner: null, _store: {},
           props: { className: 'dl-host', style: { height: '100%', overflowY: 'auto' } } };
}

function addStyle() {
  if (document.getElementById('dints-label-style')) return;
  const style = document.createElement('style');
  style.id = 'dints-label-style';
  style.textContent = STYLE;
  document.head.appendChild(style);
}

export default {
  id: EXTENSION_ID,
  async preRegistration(args) {
    viewer.initViewer(args);
    addStyle();
    args.servicesManager.services.userAuthenticationService.setServiceImplementation({
      getAuthorizationHeader: authorizationHeader,
    });
    await loginGate();
  },
  // runCommand('dintsLabelLabelmap', {seriesUid}): the labelmap of the series in view, {dimensions, data}, x fastest
  getCommandsModule: () => ({
    definitions: { dintsLabelLabelmap: { commandFn: ({ seriesUid }) => viewer.labelmapOf(seriesUid) } },
    defaultContext: 'DINTS_LABEL',
  }),
  getPanelModule: () => [{
    name: PANEL, iconName: 'tab-patient-info', iconLabel: 'MONAI', label: 'MONAI Label', component: MonaiLabelPanel,
  }],
};
