#!/usr/bin/env python3
"""Interop check: drive vault-server with the real hvac client (2.4.0).

Run against a freshly started, *uninitialized* server:

    VAULT_ADDR=http://127.0.0.1:8200 python3 test_hvac_sys.py

Only hvac's public API is used (hvac.Client, client.sys.*,
client.secrets.kv.v1.*). Every check prints one line; the script stops at the
first failure with a non-zero exit status, and ends with "N passed, 0 failed"
when everything passed. It needs no test framework.
"""

import base64
import sys

from hvac_harness import (  # shared set-up, helpers, runner
    STATE,
    SYSTEM_TTL,
    errors_parsed,
    expect_raises,
    hexc,
    is_no_content,
    new_client,
    run,
    status_of,
    step,
)

SHARES = 5
THRESHOLD = 3









def decode_root_token(encoded, otp):
    """Vault >= 1.10: unpadded std base64 of (token XOR otp), both ASCII."""
    raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
    assert len(raw) == len(otp), f"encoded token decodes to {len(raw)} bytes, otp has {len(otp)}"
    return bytes(a ^ b for a, b in zip(raw, otp.encode("ascii"))).decode("ascii")


# ---------------------------------------------------------------- before init


@step
def uninitialized_status():
    c = new_client()
    STATE["anon"] = c
    assert c.sys.is_initialized() is False, "is_initialized() should be False on a fresh server"
    assert c.sys.read_init_status() == {"initialized": False}, f"read_init_status: {c.sys.read_init_status()!r}"
    s = c.sys.read_seal_status()
    assert isinstance(s, dict), f"read_seal_status returned {s!r}"
    assert s["initialized"] is False and s["sealed"] is True, f"seal status before init: {s}"
    assert s["t"] == 0 and s["n"] == 0 and s["progress"] == 0, f"seal status before init: {s}"
    assert s.get("type") == "shamir", f"seal type: {s}"
    assert c.seal_status["sealed"] is True, "Client.seal_status property"


@step
def uninitialized_health():
    c = STATE["anon"]
    head = c.sys.read_health_status()  # default method is HEAD
    assert status_of(head) == 501, f"HEAD sys/health before init: {head.status_code}"
    assert head.content == b"", f"HEAD sys/health must have no body, got {head.content!r}"
    get = c.sys.read_health_status(method="GET")
    # hvac returns a dict only for 200; a 501 comes back as the Response.
    assert status_of(get) == 501, f"GET sys/health before init: {get.status_code}"
    body = get.json()
    assert body["initialized"] is False and body["sealed"] is True, f"health body before init: {body}"
    # uninit_code overrides the status code; then hvac returns the dict.
    d = c.sys.read_health_status(method="GET", uninit_code=200)
    assert isinstance(d, dict) and d["initialized"] is False, f"GET sys/health?uninitcode=200: {d!r}"


@step
def uninitialized_data_path_is_vault_down():
    c = new_client("hvs.notatoken000000000000000")
    expect_raises(hexc.VaultDown, c.sys.list_mounted_secrets_engines)


# ---------------------------------------------------------------- init


@step
def initialize():
    c = STATE["anon"]
    r = c.sys.initialize(secret_shares=SHARES, secret_threshold=THRESHOLD)
    assert isinstance(r, dict), f"initialize returned {r!r}"
    keys, keys_b64, root = r.get("keys"), r.get("keys_base64"), r.get("root_token")
    assert isinstance(keys, list) and len(keys) == SHARES, f"initialize keys: {keys!r}"
    assert isinstance(keys_b64, list) and len(keys_b64) == SHARES, f"initialize keys_base64: {keys_b64!r}"
    for k, kb in zip(keys, keys_b64):
        assert bytes.fromhex(k) == base64.b64decode(kb), "keys[i] and keys_base64[i] must encode the same share"
    assert len(set(keys)) == SHARES, "shares must be distinct"
    assert isinstance(root, str) and root, f"root_token: {root!r}"
    STATE.update(keys=keys, keys_b64=keys_b64, root=root)
    assert c.sys.is_initialized() is True, "is_initialized() after init"


@step
def initialize_twice_is_invalid_request():
    e = expect_raises(hexc.InvalidRequest, STATE["anon"].sys.initialize, secret_shares=SHARES, secret_threshold=THRESHOLD)
    errors_parsed(e)


@step
def sealed_after_init():
    c = STATE["anon"]
    assert c.sys.is_sealed() is True, "shamir-sealed vault must still be sealed after init"
    s = c.sys.read_seal_status()
    assert s["initialized"] is True and s["sealed"] is True, f"seal status after init: {s}"
    assert s["t"] == THRESHOLD and s["n"] == SHARES and s["progress"] == 0, f"t/n/progress after init: {s}"


@step
def sealed_health():
    c = STATE["anon"]
    head = c.sys.read_health_status(method="HEAD")
    assert status_of(head) == 503, f"HEAD sys/health while sealed: {head.status_code}"
    assert head.content == b"", f"HEAD must have no body, got {head.content!r}"
    get = c.sys.read_health_status(method="GET")
    assert status_of(get) == 503, f"GET sys/health while sealed: {get.status_code}"
    body = get.json()
    assert body["initialized"] is True and body["sealed"] is True, f"health body while sealed: {body}"
    d = c.sys.read_health_status(method="GET", sealed_code=200)
    assert isinstance(d, dict) and d["sealed"] is True, f"GET sys/health?sealedcode=200: {d!r}"


@step
def sealed_data_path_is_vault_down():
    c = new_client(STATE["root"])
    STATE["root_client"] = c
    e = expect_raises(hexc.VaultDown, c.sys.list_mounted_secrets_engines)
    errors_parsed(e)
    expect_raises(hexc.VaultDown, c.secrets.kv.v1.read_secret, path="x", mount_point="secret")


# ---------------------------------------------------------------- unseal


@step
def unseal_progress_and_duplicate_share():
    c = STATE["anon"]
    keys = STATE["keys"]
    r = c.sys.submit_unseal_key(keys[4])
    assert isinstance(r, dict), f"submit_unseal_key returned {r!r}"
    assert r["sealed"] is True and r["progress"] == 1, f"after 1 share: {r}"
    assert r["t"] == THRESHOLD and r["n"] == SHARES, f"t/n in unseal response: {r}"
    assert isinstance(r.get("nonce"), str) and r["nonce"], f"an unseal attempt must have a nonce: {r}"
    # The same share again is silently ignored (Vault: 200, progress unchanged).
    r = c.sys.submit_unseal_key(keys[4])
    assert r["sealed"] is True and r["progress"] == 1, f"duplicate share must not count: {r}"
    r = c.sys.submit_unseal_key(keys_b64_of(1))  # base64 form of a share is accepted too
    assert r["sealed"] is True and r["progress"] == 2, f"after a base64 share: {r}"
    s = c.sys.read_seal_status()
    assert s["progress"] == 2 and s["sealed"] is True, f"seal-status progress: {s}"


def keys_b64_of(i):
    return STATE["keys_b64"][i]


@step
def unseal_reset_while_sealed():
    c = STATE["anon"]
    r = c.sys.submit_unseal_key(reset=True)
    assert isinstance(r, dict), f"submit_unseal_key(reset=True) returned {r!r}"
    assert r["sealed"] is True and r["progress"] == 0, f"after reset: {r}"
    assert r.get("nonce", "") == "", f"nonce after reset: {r}"
    s = c.sys.read_seal_status()
    assert s["progress"] == 0 and s["sealed"] is True, f"seal status after reset: {s}"


@step
def unseal_scrambled_order():
    c = STATE["anon"]
    keys = STATE["keys"]
    scrambled = [keys[3], keys[0], keys[4]]
    r = c.sys.submit_unseal_keys(scrambled)
    assert isinstance(r, dict), f"submit_unseal_keys returned {r!r}"
    assert r["sealed"] is False, f"not unsealed after {THRESHOLD} shares: {r}"
    assert r["progress"] == 0, f"progress after unseal: {r}"
    assert c.sys.is_sealed() is False, "is_sealed() after unseal"
    s = c.sys.read_seal_status()
    assert s["t"] == THRESHOLD and s["n"] == SHARES and s["progress"] == 0, f"seal status after unseal: {s}"


@step
def unseal_when_unsealed():
    c = STATE["anon"]
    r = c.sys.submit_unseal_key(STATE["keys"][2])
    assert isinstance(r, dict) and r["sealed"] is False, f"a share submitted while unsealed is ignored: {r!r}"
    # Vault: reset while unsealed -> 400 "vault is unsealed".
    expect_raises(hexc.InvalidRequest, c.sys.submit_unseal_key, reset=True)


@step
def active_health():
    c = STATE["anon"]
    head = c.sys.read_health_status(method="HEAD")
    assert status_of(head) == 200, f"HEAD sys/health when active: {head.status_code}"
    assert head.content == b"", f"HEAD must have no body, got {head.content!r}"
    d = c.sys.read_health_status(method="GET")
    assert isinstance(d, dict), f"GET sys/health when active should give a dict, got {d!r}"
    assert d["initialized"] is True and d["sealed"] is False and d["standby"] is False, f"health: {d}"
    for k in ("performance_standby", "replication_performance_mode", "replication_dr_mode", "server_time_utc", "version"):
        assert k in d, f"health body lacks {k!r}: {d}"
    assert isinstance(d["server_time_utc"], int), f"server_time_utc: {d}"
    r = c.sys.read_health_status(method="GET", active_code=299)
    assert status_of(r) == 299, f"GET sys/health?activecode=299: {r.status_code}"
    assert r.json()["sealed"] is False, "health body with a custom active code"


# ---------------------------------------------------------------- auth errors


@step
def bad_token_is_forbidden():
    bad = new_client("hvs.thisisnotavalidtoken12345")
    e = expect_raises(hexc.Forbidden, bad.sys.list_mounted_secrets_engines)
    errors_parsed(e)
    expect_raises(hexc.Forbidden, bad.sys.rotate_encryption_key)
    expect_raises(hexc.Forbidden, bad.sys.enable_secrets_engine, "kv", path="nope", options={"version": "1"})


@step
def missing_token_is_forbidden():
    anon = new_client(None)
    expect_raises(hexc.Forbidden, anon.sys.list_mounted_secrets_engines)
    expect_raises(hexc.Forbidden, anon.sys.get_encryption_key_status)


# ---------------------------------------------------------------- keyring


@step
def key_status_initial_term():
    c = STATE["root_client"]
    r = c.sys.get_encryption_key_status()
    assert isinstance(r, dict) and isinstance(r.get("data"), dict), f"get_encryption_key_status: {r!r}"
    assert r["data"]["term"] == 1, f"term after init: {r['data']}"
    assert isinstance(r["data"].get("install_time"), str) and r["data"]["install_time"], f"install_time: {r['data']}"
    STATE["install_time_1"] = r["data"]["install_time"]


@step
def rotate_encryption_key():
    c = STATE["root_client"]
    is_no_content(c.sys.rotate_encryption_key(), "rotate_encryption_key")
    r = c.sys.get_encryption_key_status()
    assert r["data"]["term"] == 2, f"term after rotate: {r['data']}"
    # sys/key-status is a "top-level inject" route in Vault.
    assert r.get("term") == 2, f"key-status should also carry 'term' at the top level: {r}"
    ks = c.key_status
    assert ks["term"] == 2, f"Client.key_status: {ks}"
    assert "encryptions" in ks, f"key status lacks 'encryptions': {ks}"


# ---------------------------------------------------------------- mounts


@step
def enable_kv_v1():
    c = STATE["root_client"]
    r = c.sys.enable_secrets_engine("kv", path="kvtest", description="interop kv", options={"version": "1"})
    is_no_content(r, "enable_secrets_engine")


@step
def list_mounts_shows_kvtest():
    c = STATE["root_client"]
    r = c.sys.list_mounted_secrets_engines()
    assert isinstance(r, dict) and isinstance(r.get("data"), dict), f"list_mounted_secrets_engines: {r!r}"
    data = r["data"]
    assert "kvtest/" in data, f"'kvtest/' missing from mounts: {sorted(data)}"
    m = data["kvtest/"]
    assert m["type"] == "kv", f"kvtest type: {m}"
    assert m["description"] == "interop kv", f"kvtest description: {m}"
    assert m.get("options") == {"version": "1"}, f"kvtest options: {m}"
    assert isinstance(m.get("accessor"), str) and m["accessor"].startswith("kv_"), f"kvtest accessor: {m}"
    assert isinstance(m.get("config"), dict), f"kvtest config: {m}"
    assert "sys/" in data and data["sys/"]["type"] == "system", f"sys/ mount: {sorted(data)}"
    # Vault also injects the mounts at the top level.
    assert "kvtest/" in r, f"mounts should also appear at the top level: {sorted(r)}"


@step
def retrieve_mount_option():
    c = STATE["root_client"]
    assert c.sys.retrieve_mount_option("kvtest", "version") == "1", "retrieve_mount_option(kvtest, version)"
    assert c.sys.retrieve_mount_option("kvtest", "nope", "dflt") == "dflt", "retrieve_mount_option default"


@step
def duplicate_enable_is_invalid_request():
    c = STATE["root_client"]
    e = expect_raises(hexc.InvalidRequest, c.sys.enable_secrets_engine, "kv", path="kvtest", options={"version": "1"})
    errors_parsed(e)


@step
def read_mount_configuration():
    c = STATE["root_client"]
    r = c.sys.read_mount_configuration("kvtest")
    assert isinstance(r, dict) and isinstance(r.get("data"), dict), f"read_mount_configuration: {r!r}"
    d = r["data"]
    assert d["description"] == "interop kv", f"tune description: {d}"
    assert d["default_lease_ttl"] == SYSTEM_TTL and d["max_lease_ttl"] == SYSTEM_TTL, f"effective TTLs: {d}"
    assert d["force_no_cache"] is False, f"force_no_cache: {d}"


@step
def tune_mount_configuration():
    c = STATE["root_client"]
    r = c.sys.tune_mount_configuration("kvtest", description="tuned by hvac", default_lease_ttl="1h")
    is_no_content(r, "tune_mount_configuration")
    d = c.sys.read_mount_configuration("kvtest")["data"]
    assert d["description"] == "tuned by hvac", f"description after tune: {d}"
    assert d["default_lease_ttl"] == 3600, f"default_lease_ttl after tune: {d}"
    assert d["max_lease_ttl"] == SYSTEM_TTL, f"max_lease_ttl after tune: {d}"
    m = c.sys.list_mounted_secrets_engines()["data"]["kvtest/"]
    assert m["description"] == "tuned by hvac", f"mount table after tune: {m}"
    assert m["config"]["default_lease_ttl"] == 3600, f"mount config after tune: {m}"


# ---------------------------------------------------------------- kv v1


@step
def kv_v1_create_and_read():
    kv = STATE["root_client"].secrets.kv.v1
    # method=None: hvac reads first, gets InvalidPath (404), then POSTs.
    r = kv.create_or_update_secret(path="app/db", secret={"user": "alice", "pass": "s3cr3t"}, mount_point="kvtest")
    is_no_content(r, "create_or_update_secret (create)")
    got = kv.read_secret(path="app/db", mount_point="kvtest")
    assert isinstance(got, dict), f"read_secret: {got!r}"
    assert got["data"] == {"user": "alice", "pass": "s3cr3t"}, f"read_secret data: {got['data']}"


@step
def kv_v1_update():
    kv = STATE["root_client"].secrets.kv.v1
    # method=None: the read succeeds, so hvac PUTs.
    r = kv.create_or_update_secret(path="app/db", secret={"user": "bob", "n": 7}, mount_point="kvtest")
    is_no_content(r, "create_or_update_secret (update)")
    got = kv.read_secret(path="app/db", mount_point="kvtest")["data"]
    assert got == {"user": "bob", "n": 7}, f"a v1 write replaces the whole secret: {got}"
    kv.create_or_update_secret(path="app/other", secret={"a": "b"}, method="POST", mount_point="kvtest")
    kv.create_or_update_secret(path="top", secret={"x": ["y", {"z": True}]}, method="PUT", mount_point="kvtest")
    assert kv.read_secret(path="top", mount_point="kvtest")["data"] == {"x": ["y", {"z": True}]}, "nested JSON"


@step
def kv_v1_list():
    kv = STATE["root_client"].secrets.kv.v1
    r = kv.list_secrets(path="app", mount_point="kvtest")
    assert isinstance(r, dict), f"list_secrets(app): {r!r}"
    assert sorted(r["data"]["keys"]) == ["db", "other"], f"list app: {r['data']}"
    r = kv.list_secrets(path="", mount_point="kvtest")
    assert sorted(r["data"]["keys"]) == ["app/", "top"], f"list root: {r['data']}"
    expect_raises(hexc.InvalidPath, kv.list_secrets, path="missing", mount_point="kvtest")


@step
def kv_v1_delete():
    kv = STATE["root_client"].secrets.kv.v1
    is_no_content(kv.delete_secret(path="app/other", mount_point="kvtest"), "delete_secret")
    expect_raises(hexc.InvalidPath, kv.read_secret, path="app/other", mount_point="kvtest")
    assert kv.list_secrets(path="app", mount_point="kvtest")["data"]["keys"] == ["db"], "list after delete"


@step
def kv_v1_bad_token_and_unknown_mount():
    bad = new_client("hvs.thisisnotavalidtoken12345").secrets.kv.v1
    expect_raises(hexc.Forbidden, bad.read_secret, path="app/db", mount_point="kvtest")
    kv = STATE["root_client"].secrets.kv.v1
    expect_raises(hexc.InvalidPath, kv.read_secret, path="app/db", mount_point="nosuchmount")


# ---------------------------------------------------------------- rekey


@step
def rekey_needs_a_sudo_token():
    # Unlike Vault, and like OpenBao >= 2.5, a ceremony needs a token (with
    # sudo) unless the server is configured otherwise; hvac sends it.
    anon = STATE["anon"]
    e = expect_raises(hexc.Forbidden, anon.sys.read_rekey_progress)
    errors_parsed(e)
    expect_raises(hexc.Forbidden, anon.sys.start_rekey, 3, 2)
    expect_raises(hexc.Forbidden, anon.sys.cancel_rekey)
    expect_raises(hexc.Forbidden, anon.sys.rekey, STATE["keys"][0], nonce="any")


@step
def rekey_to_three_shares():
    c = STATE["root_client"]
    keys = STATE["keys"]
    p = c.sys.read_rekey_progress()
    assert isinstance(p, dict) and p["started"] is False, f"rekey progress before start: {p!r}"
    assert p["required"] == THRESHOLD, f"rekey 'required' is the current threshold: {p}"
    r = c.sys.start_rekey(3, 2)
    assert isinstance(r, dict), f"start_rekey returned {r!r}"
    assert r["started"] is True and r["t"] == 2 and r["n"] == 3 and r["progress"] == 0, f"start_rekey: {r}"
    nonce = r["nonce"]
    assert isinstance(nonce, str) and nonce, f"rekey nonce: {r}"
    e = expect_raises(hexc.InvalidRequest, c.sys.rekey, keys[1], nonce="not-the-nonce")
    errors_parsed(e)
    first = c.sys.rekey(keys[1], nonce=nonce)
    assert isinstance(first, dict) and not first.get("complete"), f"rekey after one share: {first!r}"
    assert first["progress"] == 1, f"rekey progress after one share: {first}"
    # A share given twice in one rekey is an error in Vault (unlike unseal).
    expect_raises(hexc.InvalidRequest, c.sys.rekey, keys[1], nonce=nonce)
    done = c.sys.rekey_multi([keys[4], keys[2]], nonce=nonce)
    assert isinstance(done, dict) and done.get("complete") is True, f"rekey_multi did not complete: {done!r}"
    new_keys = done.get("keys")
    assert isinstance(new_keys, list) and len(new_keys) == 3, f"rekey keys: {done}"
    assert isinstance(done.get("keys_base64"), list) and len(done["keys_base64"]) == 3, f"keys_base64: {done}"
    assert not set(new_keys) & set(keys), "new shares must differ from the old ones"
    STATE["new_keys"] = new_keys
    p = c.sys.read_rekey_progress()
    assert p["started"] is False, f"rekey progress after completion: {p}"
    s = c.sys.read_seal_status()
    assert s["t"] == 2 and s["n"] == 3 and s["sealed"] is False, f"seal config after rekey: {s}"


@step
def rekey_cancel():
    c = STATE["root_client"]
    r = c.sys.start_rekey(secret_shares=3, secret_threshold=2)
    assert r["started"] is True, f"second start_rekey: {r}"
    # Nobody without a token can cancel the operator's rekey.
    expect_raises(hexc.Forbidden, STATE["anon"].sys.cancel_rekey)
    assert c.sys.read_rekey_progress()["started"] is True, "rekey survives an anonymous cancel"
    is_no_content(c.sys.cancel_rekey(), "cancel_rekey")
    assert c.sys.read_rekey_progress()["started"] is False, "rekey progress after cancel"


@step
def key_term_unchanged_by_rekey():
    r = STATE["root_client"].sys.get_encryption_key_status()
    assert r["data"]["term"] == 2, f"rekey must not change the keyring term: {r['data']}"


# ---------------------------------------------------------------- seal / unseal with new keys


@step
def seal():
    c = STATE["root_client"]
    is_no_content(c.sys.seal(), "seal")
    assert c.sys.is_sealed() is True, "is_sealed() after seal"
    s = c.sys.read_seal_status()
    assert s["t"] == 2 and s["n"] == 3 and s["progress"] == 0, f"seal status after seal: {s}"


@step
def sealed_kv_is_vault_down():
    c = STATE["root_client"]
    e = expect_raises(hexc.VaultDown, c.secrets.kv.v1.read_secret, path="app/db", mount_point="kvtest")
    errors_parsed(e)
    expect_raises(hexc.VaultDown, c.sys.get_encryption_key_status)
    expect_raises(hexc.VaultDown, c.sys.rotate_encryption_key)


@step
def old_keys_no_longer_unseal():
    c = STATE["anon"]
    old = STATE["keys"]
    r = c.sys.submit_unseal_key(old[0])
    assert r["sealed"] is True and r["progress"] == 1, f"first old share: {r}"
    # Reaching the threshold with old shares: Vault >= 1.13 answers 400.
    e = expect_raises(hexc.InvalidRequest, c.sys.submit_unseal_key, old[1])
    errors_parsed(e)
    s = c.sys.read_seal_status()
    assert s["sealed"] is True and s["progress"] == 0, f"progress resets after a failed unseal: {s}"
    e = expect_raises(hexc.InvalidRequest, c.sys.submit_unseal_keys, [old[3], old[2], old[4]])
    assert c.sys.is_sealed() is True, "old keys must not unseal"


@step
def new_keys_unseal():
    c = STATE["anon"]
    new = STATE["new_keys"]
    r = c.sys.submit_unseal_keys([new[2], new[0]])
    assert isinstance(r, dict) and r["sealed"] is False, f"new keys did not unseal: {r!r}"
    assert c.sys.is_sealed() is False, "is_sealed() after unseal with new keys"
    got = STATE["root_client"].secrets.kv.v1.read_secret(path="app/db", mount_point="kvtest")["data"]
    assert got == {"user": "bob", "n": 7}, f"data survives seal/rekey/unseal: {got}"
    assert STATE["root_client"].sys.get_encryption_key_status()["data"]["term"] == 2, "term after unseal"


# ---------------------------------------------------------------- generate root


@step
def generate_root_needs_a_sudo_token():
    anon = STATE["anon"]
    e = expect_raises(hexc.Forbidden, anon.sys.read_root_generation_progress)
    errors_parsed(e)
    expect_raises(hexc.Forbidden, anon.sys.start_root_token_generation)
    expect_raises(hexc.Forbidden, anon.sys.cancel_root_generation)
    expect_raises(hexc.Forbidden, anon.sys.generate_root, STATE["new_keys"][0], "any")


@step
def generate_root_cancel():
    c = STATE["root_client"]
    p = c.sys.read_root_generation_progress()
    assert isinstance(p, dict) and p["started"] is False, f"generate-root progress before start: {p!r}"
    assert p["required"] == 2, f"generate-root 'required' is the threshold: {p}"
    assert p["otp_length"] == len(STATE["root"]), f"otp_length must equal the root token length: {p}"
    r = c.sys.start_root_token_generation()
    assert r["started"] is True, f"start_root_token_generation: {r}"
    expect_raises(hexc.Forbidden, STATE["anon"].sys.cancel_root_generation)
    assert c.sys.read_root_generation_progress()["started"] is True, "attempt survives an anonymous cancel"
    is_no_content(c.sys.cancel_root_generation(), "cancel_root_generation")
    assert c.sys.read_root_generation_progress()["started"] is False, "generate-root after cancel"


@step
def generate_root():
    c = STATE["root_client"]
    new = STATE["new_keys"]
    r = c.sys.start_root_token_generation()
    assert isinstance(r, dict), f"start_root_token_generation returned {r!r}"
    otp, nonce = r.get("otp"), r.get("nonce")
    assert isinstance(otp, str) and len(otp) == r["otp_length"] > 0, f"otp: {r}"
    assert isinstance(nonce, str) and nonce and r["started"] is True, f"nonce/started: {r}"
    assert r["progress"] == 0 and r["required"] == 2 and r["complete"] is False, f"attempt: {r}"
    p = c.sys.read_root_generation_progress()
    assert p["started"] is True and p["nonce"] == nonce and p.get("otp", "") == "", f"progress shows no otp: {p}"
    e = expect_raises(hexc.InvalidRequest, c.sys.generate_root, new[1], "wrong-nonce")
    errors_parsed(e)
    r1 = c.sys.generate_root(new[1], nonce)
    assert isinstance(r1, dict) and r1["complete"] is False and r1["progress"] == 1, f"after one share: {r1!r}"
    r2 = c.sys.generate_root(new[2], nonce)
    assert r2["complete"] is True, f"after threshold shares: {r2}"
    enc = r2.get("encoded_token") or r2.get("encoded_root_token")
    assert enc and "=" not in enc, f"encoded token must be unpadded base64: {r2}"
    assert r2.get("encoded_root_token", enc) == enc, f"encoded_token and encoded_root_token differ: {r2}"
    token = decode_root_token(enc, otp)
    assert token != STATE["root"], "generate-root must mint a new token"
    assert token.isascii() and token.isprintable(), f"decoded token: {token!r}"
    STATE["new_root"] = token
    assert c.sys.read_root_generation_progress()["started"] is False, "attempt is cleared after completion"


@step
def new_root_token_works():
    c = new_client(STATE["new_root"])
    data = c.sys.list_mounted_secrets_engines()["data"]
    assert "kvtest/" in data, f"new root token lists mounts: {sorted(data)}"
    assert c.secrets.kv.v1.read_secret(path="app/db", mount_point="kvtest")["data"]["user"] == "bob", "new root reads kv"
    # The old root token still works too.
    assert "kvtest/" in STATE["root_client"].sys.list_mounted_secrets_engines()["data"], "old root token"


# ---------------------------------------------------------------- disable


@step
def disable_secrets_engine():
    c = STATE["root_client"]
    is_no_content(c.sys.disable_secrets_engine("kvtest"), "disable_secrets_engine")
    data = c.sys.list_mounted_secrets_engines()["data"]
    assert "kvtest/" not in data, f"kvtest/ still mounted: {sorted(data)}"
    expect_raises(hexc.InvalidPath, c.secrets.kv.v1.read_secret, path="app/db", mount_point="kvtest")
    # Re-enabling at the same path starts empty: disabling deletes the data.
    is_no_content(c.sys.enable_secrets_engine("kv", path="kvtest", options={"version": "1"}), "re-enable")
    expect_raises(hexc.InvalidPath, c.secrets.kv.v1.read_secret, path="app/db", mount_point="kvtest")
    is_no_content(c.sys.disable_secrets_engine("kvtest"), "disable again")


if __name__ == "__main__":
    sys.exit(run())
