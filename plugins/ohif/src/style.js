// The panel's look: OHIF's dark theme colours, readable contrast (no white-on-white bars), no web fonts.
export const STYLE = `
.dl-panel { color: #d8dee9; font-size: 13px; padding: 8px; font-family: inherit; }
.dl-section { border-top: 1px solid #2b3a55; padding: 6px 0 8px; }
.dl-title { color: #5acce6; font-weight: 600; margin-bottom: 4px; }
.dl-status { padding: 6px; border-radius: 4px; margin-bottom: 6px; background: #0b1a42; }
.dl-status.dl-error, .dl-error { color: #ffb4a9; }
.dl-status.dl-warn { color: #ffd479; }
.dl-button { background: #1f6feb; color: #fff; border: 0; border-radius: 4px; padding: 4px 10px; margin: 2px 4px 2px 0; cursor: pointer; }
.dl-button:disabled { background: #3a4254; color: #9aa3b5; cursor: default; }
.dl-small { padding: 2px 6px; font-size: 12px; }
.dl-select, .dl-input { background: #0b1a42; color: #d8dee9; border: 1px solid #3a4d7a; border-radius: 4px; padding: 3px; margin: 2px 4px 2px 0; max-width: 100%; }
.dl-narrow { width: 70px; }
.dl-label { display: flex; align-items: center; gap: 6px; padding: 3px 4px; border-radius: 4px; cursor: pointer; }
.dl-label:hover { background: #16264f; }
.dl-chosen { background: #1d3570; outline: 1px solid #5acce6; }
.dl-swatch { width: 14px; height: 14px; border-radius: 3px; display: inline-block; }
.dl-dim { color: #9aa3b5; font-size: 12px; }
.dl-login-backdrop { position: fixed; inset: 0; background: rgba(0, 0, 0, 0.85); display: flex; align-items: center; justify-content: center; z-index: 10000; }
.dl-login { background: #090c29; border: 1px solid #3a4d7a; border-radius: 6px; width: 320px; display: flex; flex-direction: column; gap: 6px; }
.dl-row { display: flex; align-items: center; gap: 8px; flex-wrap: wrap; }
`;
