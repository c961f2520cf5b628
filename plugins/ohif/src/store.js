// The panel's state lives here, at module scope: OHIF unmounts a panel on every tab switch, panel close and
// study change (Next Sample), and the connection, labels, points and training state must outlive that.
import { useState } from 'preact/hooks';

const store = {};

export function usePersisted(key, initial) {
  const [value, setValue] = useState(key in store ? store[key] : initial);
  const set = v => {
    const next = typeof v === 'function' ? v(store[key] ?? value) : v;
    store[key] = next;
    setValue(next);
  };
  return [value, set];
}

export function hasStored(key) {
  return key in store;
}
