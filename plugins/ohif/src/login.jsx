// With authentication on, nothing of the PACS or the app can be read before a log-in: OHIF awaits the extension's
// preRegistration before it asks the PACS anything, so the log-in happens there, and every request OHIF makes
// afterwards (DICOMweb through the app's proxy) carries the token, as the panel's own do.
import { render } from 'preact';
import { useState } from 'preact/hooks';

import { api, storedToken } from './api.js';

// the log-in form: before OHIF starts (loginGate), and in the panel when the server refuses a token later
export function LoginForm({ done }) {
  const [user, setUser] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState('');
  const submit = async e => {
    e.preventDefault();
    try {
      await api.login(user, password);
      done();
    } catch (err) {
      setError(err.message);
    }
  };
  return (
    <div class="dl-login-backdrop">
      <form class="dl-login dl-panel" data-testid="dl-login" onSubmit={submit}>
        <div class="dl-title">dints-label: log in</div>
        <div class="dl-dim">This server needs a log-in (your user name, and your password or token).</div>
        <input class="dl-input" name="user" placeholder="user" autocomplete="username" value={user}
          onInput={e => setUser(e.currentTarget.value)} />
        <input class="dl-input" name="password" type="password" placeholder="password or token"
          autocomplete="current-password" value={password} onInput={e => setPassword(e.currentTarget.value)} />
        <button class="dl-button" type="submit">Log in</button>
        {error && <div class="dl-error" data-testid="dl-login-error">{error}</div>}
      </form>
    </div>
  );
}

// resolves once OHIF may go on: at once without authentication or with a stored token, else after a log-in
export async function loginGate() {
  if (storedToken() || !(await api.authEnabled())) return;
  const host = document.createElement('div');
  document.body.appendChild(host);
  await new Promise(resolve => render(<LoginForm done={resolve} />, host));
  render(null, host);
  host.remove();
}

export function authorizationHeader() {
  const token = storedToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}
