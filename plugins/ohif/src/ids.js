// Names OHIF knows our extension and mode by. The mode lists the extension by its URL: OHIF imports the keys of
// a mode's `extensions`, so a bare id there would be fetched as a module and fail.
export const EXTENSION_ID = 'dints-label.monai-label';
export const MODE_ID = 'dints-label.monai-label-mode';
export const ROUTE = 'monai-label';
export const PANEL = 'monaiLabel';
export const extensionUrl = () => `${window.PUBLIC_URL || '/'}monai-label/extension.js`;
