"""Who may read and write: tokens, roles, hosts and origins, through the real server.

An OpenID Connect provider is started here on loopback with keys made here (tests/server/token_issuer.py); every
route x role x token variant gets the status a deployment relies on. A hanging provider must not hold up
requests that do not need it; a token file serves a team without a provider; the stock Slicer client logs in.
"""

from __future__ import annotations

import threading
import time

import pytest
import requests
from monailabel.client.client import MONAILabelClient, MONAILabelClientException

from support.repo import copy_datastore, copy_model_dir
from support.server import Server

from .token_issuer import BlackHole, Issuer, new_key

from lib.server.access import PUBLIC, AccessPolicy, host_name, required_role
from lib.server.roles import ADMIN, ANNOTATOR, REVIEWER, USER, Identity
from lib.server import token_file

ROLE_LEVELS = {"none": [], "user": [USER], "annotator": [ANNOTATOR], "reviewer": [REVIEWER], "admin": [ADMIN]}
ORDER = ["none", "user", "annotator", "reviewer", "admin"]

# (method, path, query/body kwargs, the lowest role that may call it); targets that do not exist, so a request
# that passes the guard gets the route's own answer (404/422...) and changes nothing
ROUTES = [
    ("GET", "/info/", {}, "user"),
    ("GET", "/datastore/", {"params": {"output": "stats"}}, "user"),
    ("GET", "/datastore/image", {"params": {"image": "no_such_image"}}, "user"),
    ("GET", "/datastore/label", {"params": {"label": "no_such_image", "tag": "final"}}, "user"),
    ("GET", "/train/", {}, "user"),
    ("POST", "/activelearning/no_such_strategy", {"json": {}}, "user"),
    ("POST", "/infer/no_such_model", {"params": {"image": "no_such_image"}}, "user"),
    ("GET", "/proxy/dicom/qido/studies", {}, "user"),
    ("GET", "/datastore/dataset", {"params": {"limit_cases": 0}}, "annotator"),
    ("POST", "/infer/dints_pancreas", {"params": {"image": "no_such_image"},
                                       "data": {"params": '{"save_label": true}'}}, "annotator"),
    ("PUT", "/datastore/label", {"params": {"image": "no_such_image", "tag": "final"},
                                 "files": {"label": ("x.nii.gz", b"not a label")}}, "annotator"),
    ("POST", "/scoring/no_such_method", {"json": {}}, "annotator"),
    ("POST", "/datastore/label/restore", {"params": {"image": "no_such_image", "rev": 1}}, "reviewer"),
    ("DELETE", "/datastore/image", {"params": {"id": "no_such_image"}}, "admin"),
    ("DELETE", "/datastore/label", {"params": {"id": "no_such_image", "tag": "final"}}, "admin"),
    ("POST", "/train/no_such_model", {"json": {}}, "admin"),
    ("DELETE", "/train/", {}, "admin"),
    ("PUT", "/model/no_such_model", {"files": {"file": ("m.pt", b"xx")}}, "admin"),
    ("GET", "/logs/", {}, "admin"),
]
PUBLIC_ROUTES = [("GET", "/auth/"), ("GET", "/ohif/"), ("GET", "/docs")]


# ---- the rules themselves ----------------------------------------------------------------------------
def test_unlisted_routes_need_admin_and_listed_ones_their_role():
    assert required_role("POST", "/some/new/route") == ADMIN
    assert required_role("POST", "/reload") == ADMIN
    assert required_role("GET", "/ohif/assets/x.js") == PUBLIC
    assert required_role("PUT", "/datastore/label") == ANNOTATOR
    assert required_role("PUT", "/model/dints_pancreas") == ADMIN
    assert required_role("GET", "/info/") == USER


def test_roles_are_ordered():
    reviewer = Identity("r", (REVIEWER,))
    assert reviewer.has(USER) and reviewer.has(ANNOTATOR) and reviewer.has(REVIEWER) and not reviewer.has(ADMIN)
    assert not Identity("n", ()).has(USER)
    assert not Identity("x", ("something-else",)).has(USER)


@pytest.mark.parametrize("header,name", [("127.0.0.1:8000", "127.0.0.1"), ("[::1]:8000", "::1"),
                                         ("LocalHost", "localhost"), ("example.org.", "example.org")])
def test_host_header_names(header, name):
    assert host_name(header) == name


def test_origin_must_be_the_server_itself_or_listed():
    policy = AccessPolicy(verify=None, allowed_hosts={"127.0.0.1"}, cors_origins=("https://viewer.example",))
    assert policy.origin_ok("http://127.0.0.1:8000", "127.0.0.1:8000", "http")
    assert policy.origin_ok("https://viewer.example", "127.0.0.1:8000", "http")
    assert not policy.origin_ok("http://127.0.0.1:9999", "127.0.0.1:8000", "http")
    assert not policy.origin_ok("http://evil.example", "127.0.0.1:8000", "http")


def test_training_output_is_the_admins_to_read():
    from lib.server.train_routes import visible_status

    task = {"id": "t", "status": "ERROR", "details": ["Traceback ...", "/srv/model/x.pt"]}
    assert "details" not in visible_status(task, Identity("u", (ANNOTATOR,)))
    assert visible_status([task], Identity("u", (REVIEWER,)))[0] == {"id": "t", "status": "ERROR"}
    assert visible_status(task, Identity("a", (ADMIN,)))["details"] == task["details"]
    assert visible_status(task, None) == task  # authentication off: nothing to hide from


def test_token_file_holds_hashes_and_checks_them(tmp_path):
    path = tmp_path / "tokens"
    token = token_file.add(str(path), "alice", "annotator")
    assert token not in path.read_text() and (path.stat().st_mode & 0o077) == 0
    tf = token_file.TokenFile(str(path))
    assert tf(token) == Identity("alice", (ANNOTATOR,))
    with pytest.raises(token_file.AuthError):
        tf(token + "x")
    with pytest.raises(ValueError, match="line 1"):
        token_file.parse("alice annotator nothex\n")
    with pytest.raises(ValueError, match="unknown role"):
        token_file.parse(f"bob superuser {'0' * 64}\n")


# ---- through the server, with a provider -------------------------------------------------------------
@pytest.fixture(scope="module")
def issuer():
    users = {name: (f"pw-{name}", roles) for name, roles in ROLE_LEVELS.items()}
    iss = Issuer(users).start()
    yield iss
    iss.stop()


def _start(start_server, module_tmp, name, conf=None, env=None) -> Server:
    studies = copy_datastore(module_tmp / f"studies_{name}")
    model = copy_model_dir(module_tmp / f"model_{name}")
    return start_server(studies, conf={"model_dir": str(model), "interactive": "false", **(conf or {})}, env=env)


@pytest.fixture(scope="module")
def server(start_server, module_tmp, issuer):
    srv = _start(start_server, module_tmp, "oidc", conf={"session_max_per_user": "2"},
                 env={"MONAI_LABEL_AUTH_ENABLE": "true", "MONAI_LABEL_AUTH_REALM_URI": issuer.realm})
    yield srv
    srv.stop()


def _call(server, method, path, kwargs, token=None, headers=None):
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    return requests.request(method, server.url + path, headers=h, timeout=60, **kwargs)


@pytest.mark.server
def test_every_route_by_role(server, issuer):
    for method, path, kwargs, lowest in ROUTES:
        for role in ORDER:
            token = issuer.token(role, ROLE_LEVELS[role])
            r = _call(server, method, path, kwargs, token)
            if ORDER.index(role) >= ORDER.index(lowest):
                assert r.status_code not in (401, 403), (method, path, role, r.status_code, r.text)
            else:
                assert r.status_code == 403, (method, path, role, r.status_code, r.text)
    assert server.alive()


@pytest.mark.server
def test_bad_tokens_are_refused_everywhere(server, issuer):
    other = new_key()
    variants = {
        "none": None,
        "expired": issuer.token("admin", [ADMIN], expires_in=-60),
        "other key": issuer.token("admin", [ADMIN], key=other),
        "unknown kid": issuer.token("admin", [ADMIN], key=other, kid="not-published"),
        "alg none": issuer.unsigned_token("admin", [ADMIN]),
        "hs256 with the public key": issuer.hs256_with_public_key("admin", [ADMIN]),
        "other issuer": issuer.token("admin", [ADMIN], issuer="http://127.0.0.1:1/realms/other"),
        "garbage": "not-a-token",
    }
    for method, path, kwargs, _ in ROUTES:
        for what, token in variants.items():
            r = _call(server, method, path, kwargs, token)
            assert r.status_code == 401, (method, path, what, r.status_code, r.text)
            assert "Traceback" not in r.text and "/tmp" not in r.text
    for method, path in PUBLIC_ROUTES:
        assert _call(server, method, path, {}).status_code == 200, path


@pytest.mark.server
def test_reload_is_gone(server, issuer):
    r = _call(server, "POST", "/reload", {}, issuer.token("admin", [ADMIN]))
    assert r.status_code in (404, 405)
    assert _call(server, "GET", "/info/", {}, issuer.token("user", [USER])).status_code == 200


@pytest.mark.server
def test_labels_record_the_user_who_saved_them(server, issuer, tmp_path):
    from support.safety_helpers import label_for

    images = sorted(p.name[:-7] for p in server.studies.glob("*.nii.gz"))
    image_id = images[0]
    label = label_for(server.studies, image_id, tmp_path / "l.nii.gz", values=(0, 1))
    token = issuer.token("annotator", [ANNOTATOR])
    with open(label, "rb") as f:
        r = _call(server, "PUT", "/datastore/label", {"params": {"image": image_id, "tag": "final"},
                                                       "files": {"label": ("l.nii.gz", f.read())}}, token)
    assert r.status_code == 200, r.text
    versions = _call(server, "GET", "/datastore/label/versions", {"params": {"image": image_id}},
                     issuer.token("user", [USER])).json()
    assert versions["versions"][-1]["user"] == "annotator"


@pytest.mark.server
def test_stock_slicer_client_logs_in_and_works(server, issuer, tmp_path):
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    assert client.auth_enabled()
    with pytest.raises(MONAILabelClientException):
        client.info()  # no token yet
    with pytest.raises(MONAILabelClientException):
        client.auth_token("annotator", "wrong password")
    client.update_auth(client.auth_token("annotator", "pw-annotator"))
    assert client.auth_valid_token()
    assert "models" in client.info()
    assert "objects" in client.datastore()


@pytest.mark.server
def test_other_sites_and_other_host_names_are_refused(server, issuer):
    token = issuer.token("admin", [ADMIN])
    r = _call(server, "GET", "/info/", {}, token, headers={"Host": "rebound.example"})
    assert r.status_code == 400
    for method, path, kwargs, _ in ROUTES:
        r = _call(server, method, path, kwargs, token, headers={"Origin": "http://evil.example"})
        assert r.status_code == 403, (method, path, r.status_code)
        assert "access-control-allow-origin" not in {k.lower() for k in r.headers}
    own = server.url
    assert _call(server, "GET", "/info/", {}, token, headers={"Origin": own}).status_code == 200
    pre = requests.options(f"{server.url}/info/", headers={"Origin": "http://evil.example",
                                                            "Access-Control-Request-Method": "GET"}, timeout=30)
    assert pre.status_code == 403 and "access-control-allow-origin" not in {k.lower() for k in pre.headers}


# ---- a provider that hangs, and a token file -----------------------------------------------------------
@pytest.mark.server
def test_hanging_provider_never_holds_up_requests_that_do_not_need_it(start_server, module_tmp, issuer):
    hole = BlackHole()
    srv = _start(start_server, module_tmp, "hole", conf={"auth_timeout_seconds": "2"},
                 env={"MONAI_LABEL_AUTH_ENABLE": "true", "MONAI_LABEL_AUTH_REALM_URI": hole.url})
    try:
        token = issuer.token("admin", [ADMIN])
        slow: dict = {}

        def with_token():
            t0 = time.time()
            slow["status"] = _call(srv, "GET", "/info/", {}, token).status_code
            slow["seconds"] = time.time() - t0

        worker = threading.Thread(target=with_token)
        worker.start()
        time.sleep(0.3)  # the token's key fetch is now hanging on the provider
        for _ in range(5):
            t0 = time.time()
            r = _call(srv, "GET", "/info/", {})
            assert r.status_code == 401 and time.time() - t0 < 1.0, time.time() - t0
            t0 = time.time()
            assert _call(srv, "GET", "/ohif/", {}).status_code == 200 and time.time() - t0 < 1.0
        worker.join(30)
        assert slow["status"] == 503 and slow["seconds"] < 10, slow
        t0 = time.time()  # the failure is remembered: the next token costs no second timeout
        assert _call(srv, "GET", "/info/", {}, token).status_code == 503 and time.time() - t0 < 1.0
    finally:
        srv.stop()
        hole.close()


@pytest.mark.server
def test_token_file_mode_with_the_stock_client(start_server, module_tmp, tmp_path):
    tokens = tmp_path / "tokens"
    alice = token_file.add(str(tokens), "alice", "annotator")
    bob = token_file.add(str(tokens), "bob", "user")
    srv = _start(start_server, module_tmp, "tokens", conf={"auth_tokens": str(tokens)})
    try:
        assert _call(srv, "GET", "/info/", {}).status_code == 401
        assert _call(srv, "GET", "/info/", {}, bob).status_code == 200
        assert _call(srv, "PUT", "/model/dints_pancreas", {"files": {"file": ("m.pt", b"xx")}}, alice).status_code == 403
        client = MONAILabelClient(srv.url, tmpdir=str(tmp_path))
        assert client.auth_enabled()
        with pytest.raises(MONAILabelClientException):
            client.auth_token("alice", "not-the-token")
        client.update_auth(client.auth_token("alice", alice))
        assert "models" in client.info()
        carol = token_file.add(str(tokens), "carol", "admin")  # read again: no restart
        assert _call(srv, "GET", "/logs/", {}, carol).status_code not in (401, 403)
    finally:
        srv.stop()


@pytest.mark.server
def test_deleting_an_image_keeps_it_recoverable(server, issuer):
    from lib.atomic import sha256_file

    images = sorted(p.name[:-7] for p in server.studies.glob("*.nii.gz"))
    victim = images[-1]
    original = sha256_file(server.studies / f"{victim}.nii.gz")
    r = _call(server, "DELETE", "/datastore/image", {"params": {"id": victim}}, issuer.token("admin", [ADMIN]))
    assert r.status_code == 200, r.text
    kept = server.studies / r.json()["kept_as"]
    assert kept.parent.name == ".deleted" and sha256_file(kept) == original
    listing = _call(server, "GET", "/datastore/", {"params": {"output": "all"}}, issuer.token("user", [USER])).json()
    assert victim not in listing["objects"] and images[0] in listing["objects"]


@pytest.mark.server
def test_training_parameters_never_name_server_paths(server, issuer, tmp_path):
    admin = issuer.token("admin", [ADMIN])
    outside = tmp_path / "overwritten.pth"
    outside.write_bytes(b"precious")
    cases = [("dints_search", {"output": str(outside)}), ("dints_search", {"output": "../../escaped.pth"}),
             ("dints_search", {"output": "x.sh"}), ("dints_pancreas", {"arch": "/etc/passwd"}),
             ("dints_pancreas", {"arch": "../model/x.pth"})]
    for model, params in cases:
        r = _call(server, "POST", f"/train/{model}", {"json": params}, admin)
        assert r.status_code == 400, (model, params, r.status_code, r.text)
        assert "file name" in r.json()["detail"]
    assert outside.read_bytes() == b"precious" and not list(outside.parent.glob("*.svg"))
    assert not (server.studies.parent / "escaped.pth").exists()
    status = _call(server, "GET", "/train/", {}, admin)
    assert status.status_code in (200, 404) and "RUNNING" not in status.text  # 404: no training ever started


@pytest.mark.server
def test_sessions_are_limited_per_user(server, issuer):
    volume = sorted(server.studies.glob("*.nii.gz"))[0].read_bytes()
    alice, bob = issuer.token("alice", [USER]), issuer.token("bob", [USER])

    def upload(token):
        return _call(server, "PUT", "/session/", {"files": {"files": ("ct.nii.gz", volume)}}, token)

    made = [upload(alice) for _ in range(2)]
    assert all(r.status_code == 200 for r in made), [r.text for r in made]
    third = upload(alice)
    assert third.status_code == 429 and "per user" in third.json()["detail"]
    assert upload(bob).status_code == 200  # another user is not held up by alice's sessions
    for r in made:
        _call(server, "DELETE", f"/session/{r.json()['session_id']}", {}, alice)
    assert upload(alice).status_code == 200


@pytest.mark.server
def test_the_ohif_panels_requests_work_with_a_token(server, issuer):
    """The bundled OHIF panel sends no token itself: behind a reverse proxy that adds the logged-in user's token
    (README, Security), its own requests (tests/server/clients/ohif.py) work, and without one they are refused."""
    import nibabel as nib

    from .clients.ohif import OHIFError, OHIFPanel

    image = sorted(p.name[:-7] for p in server.studies.glob("*.nii.gz"))[0]
    shape = nib.load(str(server.studies / f"{image}.nii.gz")).shape
    with pytest.raises(OHIFError):
        OHIFPanel(server.url, shape).connect()
    panel = OHIFPanel(server.url, shape, headers={"Authorization": f"Bearer {issuer.token('ann', [ANNOTATOR])}"})
    assert "dints_pancreas" in panel.connect()["models"]
    view = panel.run(image, "dints_pancreas")
    assert (view == panel.segments["pancreas"]).any()
    with pytest.raises(OHIFError) as err:  # Update Model trains: the admin's
        panel.update_model()
    assert err.value.response.status_code == 403
