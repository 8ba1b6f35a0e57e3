"""Shared by the hvac interop scripts: environment checks, an hvac client
factory, assertion helpers and the step runner (one line per check, stop at
the first failure, final "N passed, M failed" line)."""

import os
import sys
import traceback

try:
    import hvac
    import hvac.exceptions as hexc
    import requests
except ImportError as e:  # pragma: no cover - environment problem
    print(f"FAIL: cannot import hvac ({e}); run scripts/test or `pip install hvac==2.4.0`")
    sys.exit(2)

if not __debug__:
    print("FAIL: run without -O: the checks are assert statements")
    sys.exit(2)

ADDR = os.environ.get("VAULT_ADDR")
if not ADDR:
    print("FAIL: VAULT_ADDR is not set")
    sys.exit(2)
# hvac falls back to VAULT_TOKEN / ~/.vault-token when no token is given;
# every client sets its token explicitly.
os.environ.pop("VAULT_TOKEN", None)

SYSTEM_TTL = 768 * 3600  # Vault's system default/max lease TTL, in seconds
STATE = {}
STEPS = []


# Every response a client of new_client() received: (method, path, status,
# X-Request-Id), written to $VAULT_TEST_IDS_FILE at the end so the Rust side
# can match them against the server's access log (one hook line per request,
# with the same id).
RESPONSES = []


def _record(resp, *args, **kwargs):
    path = requests.utils.urlparse(resp.request.url).path
    RESPONSES.append([resp.request.method, path, resp.status_code, resp.headers.get("X-Request-Id", "")])


def new_client(token=None):
    """An hvac client for ADDR that ignores proxy settings of the environment."""
    session = requests.Session()
    session.trust_env = False
    session.hooks["response"].append(_record)
    c = hvac.Client(url=ADDR, session=session, timeout=30)
    c.token = token
    return c


def step(fn):
    STEPS.append(fn)
    return fn


def expect_raises(exc_type, fn, *args, **kwargs):
    """Call fn and return the exception it raised; it must be exactly exc_type."""
    try:
        result = fn(*args, **kwargs)
    except hexc.VaultError as e:
        assert type(e) is exc_type, f"{fn.__name__}: expected {exc_type.__name__}, got {type(e).__name__}: {e}"
        return e
    shown = result
    if isinstance(result, requests.Response):
        shown = f"<HTTP {result.status_code} {result.text!r}>"
    raise AssertionError(f"{fn.__name__}: expected {exc_type.__name__}, but it returned {shown}")


def errors_parsed(e):
    """hvac parses the error body only for Content-Type exactly application/json."""
    assert isinstance(e.errors, list) and e.errors and all(isinstance(x, str) for x in e.errors), (
        f"error body not parsed into a non-empty 'errors' list (is Content-Type exactly application/json?): "
        f"errors={e.errors!r} message={e}"
    )


def status_of(resp):
    assert isinstance(resp, requests.Response), f"expected a requests.Response, got {type(resp).__name__}: {resp!r}"
    return resp.status_code


def is_no_content(resp, what):
    """Bodiless writes: hvac returns the requests.Response; Vault answers 204."""
    assert isinstance(resp, requests.Response), f"{what}: expected an empty response, got {resp!r}"
    assert resp.status_code == 204, f"{what}: expected 204, got {resp.status_code} body={resp.text!r}"


def run():
    """Run the registered steps in order; returns the process exit status."""
    passed = 0
    # Keep stdout and the stderr tracebacks in order when both are captured.
    sys.stdout.reconfigure(line_buffering=True)
    try:
        from importlib.metadata import version

        hvac_version = version("hvac")
    except Exception:  # metadata missing: not fatal
        hvac_version = "?"
    print(f"hvac {hvac_version} against {ADDR}")
    for fn in STEPS:
        name = fn.__name__
        try:
            fn()
        except AssertionError as e:
            print(f"FAIL {name}: {e}")
            traceback.print_exc()
            print(f"{passed} passed, 1 failed")
            return 1
        except Exception as e:  # an hvac exception or a client-side crash is a failure too
            print(f"FAIL {name}: unexpected {type(e).__name__}: {e}")
            traceback.print_exc()
            print(f"{passed} passed, 1 failed")
            return 1
        passed += 1
        print(f"ok   {name}")
    ids_file = os.environ.get("VAULT_TEST_IDS_FILE")
    if ids_file:
        import json

        with open(ids_file, "w") as f:
            json.dump(RESPONSES, f)
    print(f"{passed} passed, 0 failed")
    return 0
