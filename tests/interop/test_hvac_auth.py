#!/usr/bin/env python3
"""Interop check: drive vault-server's auth with the real hvac client (2.4.0).

Run against a freshly started, *uninitialized* server:

    VAULT_ADDR=http://127.0.0.1:8200 python3 test_hvac_auth.py

Covers ACL policies (client.sys.*_policy), auth method mounts
(client.sys.*_auth_method*), token auth (client.auth.token.*,
client.lookup_token, client.is_authenticated), capabilities
(client.sys.get_capabilities and the raw adapter), AppRole
(client.auth.approle.*), userpass (client.auth.userpass.*), JWT
(client.auth.jwt.*) and Kubernetes (client.auth.kubernetes.*), with a KV v1
mount (client.secrets.kv.v1.*) to prove that the issued tokens carry the
right policies. Only hvac's public API is used. Every check prints one line;
the script stops at the first failure with a non-zero exit status, and ends
with "N passed, 0 failed" when everything passed. It needs no test framework;
the JWT checks sign their tokens with the `openssl` CLI.

Each expectation is what HashiCorp Vault answers; where a check fails, the
message says what Vault would have sent.
"""

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from hvac_harness import (  # shared set-up, helpers, runner
    STATE,
    SYSTEM_TTL,
    errors_parsed,
    expect_raises,
    hexc,
    is_no_content,
    new_client,
    run,
    step,
)


READER_HCL = """# read-only access to kv/app, except one secret
path "kv/app/*" {
  capabilities = ["read", "list"]
}

path "kv/app/denied" {
  capabilities = ["deny"]
}
"""

# What a token needs to create child tokens (Vault's default policy does not
# allow it). POST is an "update" in the token store.
CREATOR_HCL = """path "auth/token/create" {
  capabilities = ["create", "update"]
}
"""

# Vault does not sudo-protect auth/token/create-orphan: "update" is enough
# (hvac's docstring: "A root token is not required to create an orphan token").
ORPHAN_MAKER_HCL = """path "auth/token/create-orphan" {
  capabilities = ["update"]
}
"""








def data_of(r, what):
    assert isinstance(r, dict), f"{what}: expected a JSON body (HTTP 200), got {r!r}"
    assert isinstance(r.get("data"), dict), f"{what}: 'data' is not an object: {r!r}"
    return r["data"]


def auth_of(r, what):
    assert isinstance(r, dict), f"{what}: expected a JSON body (HTTP 200), got {r!r}"
    a = r.get("auth")
    assert isinstance(a, dict), f"{what}: 'auth' is not an object: {r!r}"
    assert isinstance(a.get("client_token"), str) and a["client_token"], f"{what}: client_token: {a}"
    assert isinstance(a.get("accessor"), str) and a["accessor"], f"{what}: accessor: {a}"
    assert a["accessor"] != a["client_token"], f"{what}: accessor equals the token"
    return a


def kv_read(client, path):
    return client.secrets.kv.v1.read_secret(path=path, mount_point="kv")["data"]


def root():
    return STATE["root_client"]


def openssl(*args, stdin=None):
    exe = shutil.which("openssl")
    assert exe, "the JWT checks generate keys and sign tokens with the openssl CLI: install openssl"
    p = subprocess.run([exe, *args], input=stdin, capture_output=True, check=False)
    assert p.returncode == 0, f"openssl {' '.join(args)} failed: {p.stderr.decode(errors='replace')}"
    return p.stdout


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class RsaKey:
    """An RSA key pair made with openssl, signing RS256 JWTs."""

    def __init__(self, directory, name):
        self.path = os.path.join(directory, f"{name}.pem")
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", self.path)
        self.public_pem = openssl("pkey", "-in", self.path, "-pubout").decode("ascii")
        # hvac's kubernetes.configure accepts pem_keys only as certificates.
        self.cert_pem = openssl(
            "req", "-x509", "-new", "-key", self.path, "-subj", f"/CN={name}", "-days", "2", "-sha256"
        ).decode("ascii")

    def sign(self, claims):
        head = b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
        body = b64url(json.dumps(claims).encode())
        sig = openssl("dgst", "-sha256", "-sign", self.path, stdin=f"{head}.{body}".encode("ascii"))
        return f"{head}.{body}.{b64url(sig)}"


# ---------------------------------------------------------------- init, unseal


@step
def initialize_and_unseal():
    c = new_client()
    assert c.sys.is_initialized() is False, "is_initialized() should be False on a fresh server"
    r = c.sys.initialize(secret_shares=1, secret_threshold=1)
    assert isinstance(r, dict), f"initialize returned {r!r}"
    keys, token = r.get("keys"), r.get("root_token")
    assert isinstance(keys, list) and len(keys) == 1, f"initialize keys: {keys!r}"
    assert isinstance(token, str) and token, f"root_token: {token!r}"
    u = c.sys.submit_unseal_key(keys[0])
    assert isinstance(u, dict) and u["sealed"] is False, f"one share must unseal a 1-of-1 vault: {u!r}"
    assert c.sys.is_sealed() is False, "is_sealed() after unseal"
    STATE.update(root=token, root_client=new_client(token))


@step
def root_token_is_authenticated():
    c = root()
    assert c.is_authenticated() is True, "is_authenticated() with the root token"
    assert new_client(None).is_authenticated() is False, "is_authenticated() without a token"
    assert new_client("hvs.notarealtoken0000000000000").is_authenticated() is False, "with a bogus token"
    d = data_of(c.lookup_token(), "lookup_token() (root)")
    assert d["id"] == STATE["root"], f"lookup-self id: {d}"
    assert d["policies"] == ["root"], f"root token policies: {d}"
    assert d["ttl"] == 0 and d["creation_ttl"] == 0 and d["expire_time"] is None, f"root token never expires: {d}"
    assert d["orphan"] is True and d["num_uses"] == 0, f"root token: {d}"
    assert d["path"] == "auth/token/root", f"root token path: {d}"
    assert d["type"] == "service", f"root token type: {d}"
    STATE["root_accessor"] = d["accessor"]
    d2 = data_of(c.auth.token.lookup_self(), "auth.token.lookup_self (root)")
    assert d2["accessor"] == d["accessor"], "lookup_token() and auth.token.lookup_self() disagree"


@step
def no_token_lookup_is_forbidden():
    e = expect_raises(hexc.Forbidden, new_client(None).lookup_token)
    errors_parsed(e)
    expect_raises(hexc.Forbidden, new_client("hvs.notarealtoken0000000000000").auth.token.lookup_self)


# ---------------------------------------------------------------- policies (sys/policy)


@step
def policy_create_and_read():
    c = root()
    is_no_content(c.sys.create_or_update_policy("reader", READER_HCL), "create_or_update_policy(reader)")
    r = c.sys.read_policy("reader")
    d = data_of(r, "read_policy(reader)")
    assert d["name"] == "reader", f"read_policy name: {d}"
    assert d["rules"] == READER_HCL, f"read_policy must return the HCL text unchanged: {d['rules']!r}"
    # sys/policy/* is one of Vault's top-level-inject routes.
    assert r.get("rules") == READER_HCL, f"read_policy: 'rules' should also be at the top level: {sorted(r)}"
    is_no_content(c.sys.create_or_update_policy("creator", CREATOR_HCL), "create_or_update_policy(creator)")
    is_no_content(c.sys.create_or_update_policy("orphan-maker", ORPHAN_MAKER_HCL), "create_or_update_policy(orphan-maker)")


@step
def policy_json_form():
    c = root()
    pol = {"path": {"kv/json/*": {"capabilities": ["read"]}}}
    is_no_content(c.sys.create_or_update_policy("jsonpol", pol), "create_or_update_policy(dict)")
    rules = c.sys.read_policy("jsonpol")["data"]["rules"]
    assert rules == json.dumps(pol, indent=4, sort_keys=True), f"a JSON policy is returned as sent: {rules!r}"


@step
def policy_list():
    r = root().sys.list_policies()
    d = data_of(r, "list_policies")
    for key in ("policies", "keys"):
        assert isinstance(d.get(key), list), f"list_policies data.{key}: {d}"
        assert {"default", "root", "reader", "creator", "jsonpol"} <= set(d[key]), f"list_policies data.{key}: {d[key]}"
    assert set(r.get("policies", [])) == set(d["policies"]), f"'policies' should also be at the top level: {sorted(r)}"


@step
def policy_errors():
    c = root()
    e = expect_raises(hexc.InvalidRequest, c.sys.create_or_update_policy, "broken", 'path "kv/*" { capabilities = ')
    errors_parsed(e)
    e = expect_raises(hexc.InvalidRequest, c.sys.create_or_update_policy, "broken", 'path "kv/*" { capabilities = ["fly"] }')
    errors_parsed(e)
    expect_raises(hexc.InvalidPath, c.sys.read_policy, "nosuchpolicy")
    expect_raises(hexc.InvalidRequest, c.sys.delete_policy, "default")
    expect_raises(hexc.InvalidRequest, c.sys.delete_policy, "root")


@step
def policy_delete():
    c = root()
    is_no_content(c.sys.delete_policy("jsonpol"), "delete_policy(jsonpol)")
    assert "jsonpol" not in c.sys.list_policies()["data"]["policies"], "jsonpol still listed after delete"
    expect_raises(hexc.InvalidPath, c.sys.read_policy, "jsonpol")


# ---------------------------------------------------------------- kv v1 for the tokens to read


@step
def enable_kv_and_write():
    c = root()
    is_no_content(c.sys.enable_secrets_engine("kv", path="kv", options={"version": "1"}), "enable_secrets_engine(kv)")
    kv = c.secrets.kv.v1
    for path, secret in (
        ("app/config", {"user": "svc", "password": "pw-1"}),
        ("app/denied", {"x": "y"}),
        ("other/x", {"z": "1"}),
    ):
        is_no_content(kv.create_or_update_secret(path=path, secret=secret, method="PUT", mount_point="kv"), f"write kv/{path}")
    assert kv_read(c, "app/config") == {"user": "svc", "password": "pw-1"}, "root reads kv/app/config"


# ---------------------------------------------------------------- auth method mounts (sys/auth)


@step
def list_auth_methods_initial():
    r = root().sys.list_auth_methods()
    d = data_of(r, "list_auth_methods")
    assert "token/" in d, f"token/ missing from sys/auth: {sorted(d)}"
    assert d["token/"]["type"] == "token", f"token/ mount: {d['token/']}"
    assert "token/" in r, f"sys/auth should also list mounts at the top level: {sorted(r)}"


@step
def enable_auth_methods():
    c = root()
    is_no_content(c.sys.enable_auth_method("approle"), "enable_auth_method(approle)")
    is_no_content(c.sys.enable_auth_method("userpass", description="hvac userpass"), "enable_auth_method(userpass)")
    is_no_content(
        c.sys.enable_auth_method(
            "userpass", path="up2", description="second", config={"default_lease_ttl": "10m", "max_lease_ttl": "1h"}
        ),
        "enable_auth_method(userpass at up2)",
    )
    d = c.sys.list_auth_methods()["data"]
    for path, kind in (("approle/", "approle"), ("userpass/", "userpass"), ("up2/", "userpass"), ("token/", "token")):
        assert path in d, f"{path} missing from sys/auth: {sorted(d)}"
        m = d[path]
        assert m["type"] == kind, f"{path} type: {m}"
        assert isinstance(m.get("accessor"), str) and m["accessor"].startswith(f"auth_{kind}_"), f"{path} accessor: {m}"
        assert isinstance(m.get("config"), dict), f"{path} config: {m}"
        assert m.get("local") is False, f"{path} local: {m}"
    assert d["userpass/"]["description"] == "hvac userpass", f"userpass/ description: {d['userpass/']}"
    assert d["up2/"]["config"]["default_lease_ttl"] == 600, f"up2/ config: {d['up2/']}"
    assert d["up2/"]["config"]["max_lease_ttl"] == 3600, f"up2/ config: {d['up2/']}"
    assert d["approle/"]["accessor"] != d["userpass/"]["accessor"] != d["up2/"]["accessor"], "accessors must differ"


@step
def enable_auth_method_errors():
    c = root()
    e = expect_raises(hexc.InvalidRequest, c.sys.enable_auth_method, "approle")
    errors_parsed(e)
    expect_raises(hexc.InvalidRequest, c.sys.enable_auth_method, "nosuchmethod", path="weird")


@step
def tune_auth_method():
    c = root()
    d = data_of(c.sys.read_auth_method_tuning("up2"), "read_auth_method_tuning(up2)")
    assert d["default_lease_ttl"] == 600 and d["max_lease_ttl"] == 3600, f"tuning after enable: {d}"
    assert d["description"] == "second", f"tuning description: {d}"
    r = c.sys.tune_auth_method("up2", default_lease_ttl="30m", max_lease_ttl="2h", description="tuned by hvac")
    is_no_content(r, "tune_auth_method(up2)")
    r = c.sys.read_auth_method_tuning("up2")
    d = data_of(r, "read_auth_method_tuning(up2) after tune")
    assert d["default_lease_ttl"] == 1800, f"default_lease_ttl after tune: {d}"
    assert d["max_lease_ttl"] == 7200, f"max_lease_ttl after tune: {d}"
    assert d["description"] == "tuned by hvac", f"description after tune: {d}"
    assert d["force_no_cache"] is False, f"force_no_cache: {d}"
    assert r.get("default_lease_ttl") == 1800, f"sys/auth/*/tune should also answer at the top level: {sorted(r)}"
    m = c.sys.list_auth_methods()["data"]["up2/"]
    assert m["description"] == "tuned by hvac" and m["config"]["default_lease_ttl"] == 1800, f"mount table after tune: {m}"
    d = c.sys.read_auth_method_tuning("approle")["data"]
    assert d["default_lease_ttl"] == SYSTEM_TTL and d["max_lease_ttl"] == SYSTEM_TTL, f"untuned TTLs are the system's: {d}"
    e = expect_raises(hexc.InvalidRequest, c.sys.tune_auth_method, "up2", default_lease_ttl="3h", max_lease_ttl="1h")
    errors_parsed(e)


@step
def disable_auth_method():
    c = root()
    is_no_content(c.sys.disable_auth_method("up2"), "disable_auth_method(up2)")
    d = c.sys.list_auth_methods()["data"]
    assert "up2/" not in d, f"up2/ still mounted: {sorted(d)}"
    expect_raises(hexc.InvalidRequest, c.sys.read_auth_method_tuning, "up2")
    expect_raises(hexc.InvalidPath, c.auth.userpass.read_user, "alice", mount_point="up2")


# ---------------------------------------------------------------- token auth


@step
def token_create():
    c = root()
    meta = {"app": "hvac", "team": "interop"}
    r = c.auth.token.create(policies=["reader"], ttl="1h", meta=meta, num_uses=0)
    a = auth_of(r, "auth.token.create")
    assert a["policies"] == ["default", "reader"], f"policies (Vault adds default, sorted): {a}"
    assert a["token_policies"] == ["default", "reader"], f"token_policies: {a}"
    assert a["metadata"] == meta, f"metadata: {a}"
    assert a["lease_duration"] == 3600, f"lease_duration for ttl=1h: {a}"
    assert a["renewable"] is True and a["orphan"] is False, f"renewable/orphan: {a}"
    assert a["token_type"] == "service" and a["num_uses"] == 0, f"token_type/num_uses: {a}"
    assert r.get("data") is None and r.get("lease_id") == "", f"token create has no data and no lease: {r}"
    STATE.update(t1=a["client_token"], t1_accessor=a["accessor"], t1_meta=meta)


@step
def token_lookup_self():
    t = new_client(STATE["t1"])
    assert t.is_authenticated() is True, "is_authenticated() with a fresh child token"
    d = data_of(t.auth.token.lookup_self(), "auth.token.lookup_self")
    assert d["id"] == STATE["t1"] and d["accessor"] == STATE["t1_accessor"], f"id/accessor: {d}"
    assert d["policies"] == ["default", "reader"], f"policies: {d}"
    assert d["meta"] == STATE["t1_meta"], f"meta: {d}"
    assert d["display_name"] == "token-token", f"display_name (hvac sends display_name='token'): {d}"
    assert d["path"] == "auth/token/create", f"path: {d}"
    assert d["orphan"] is False and d["num_uses"] == 0 and d["renewable"] is True, f"orphan/num_uses/renewable: {d}"
    assert d["creation_ttl"] == 3600 and 3500 < d["ttl"] <= 3600, f"creation_ttl/ttl: {d}"
    assert d["explicit_max_ttl"] == 0 and d["type"] == "service", f"explicit_max_ttl/type: {d}"
    assert isinstance(d["expire_time"], str) and isinstance(d["issue_time"], str), f"expire_time/issue_time: {d}"
    assert isinstance(d["creation_time"], int), f"creation_time is a unix time: {d}"
    d2 = data_of(t.lookup_token(), "Client.lookup_token()")
    assert d2["id"] == STATE["t1"] and d2["accessor"] == STATE["t1_accessor"], f"lookup_token(): {d2}"


@step
def token_lookup_by_other():
    c = root()
    d = data_of(c.auth.token.lookup(STATE["t1"]), "auth.token.lookup")
    assert d["id"] == STATE["t1"] and d["accessor"] == STATE["t1_accessor"], f"lookup: {d}"
    assert d["policies"] == ["default", "reader"] and d["meta"] == STATE["t1_meta"], f"lookup: {d}"
    d = data_of(c.lookup_token(STATE["t1"]), "Client.lookup_token(token)")
    assert d["id"] == STATE["t1"], f"lookup_token(token): {d}"
    d = data_of(c.auth.token.lookup_accessor(STATE["t1_accessor"]), "auth.token.lookup_accessor")
    assert d["accessor"] == STATE["t1_accessor"], f"lookup_accessor: {d}"
    assert d["id"] == "", f"lookup by accessor must not reveal the token: {d}"
    assert d["policies"] == ["default", "reader"] and d["meta"] == STATE["t1_meta"], f"lookup_accessor: {d}"
    d = data_of(c.lookup_token(STATE["t1_accessor"], accessor=True), "Client.lookup_token(accessor, accessor=True)")
    assert d["accessor"] == STATE["t1_accessor"] and d["id"] == "", f"lookup_token(accessor=True): {d}"
    e = expect_raises(hexc.InvalidRequest, c.auth.token.lookup_accessor, "notanaccessor")
    errors_parsed(e)


@step
def token_policies_enforced():
    t = new_client(STATE["t1"])
    assert kv_read(t, "app/config") == {"user": "svc", "password": "pw-1"}, "reader reads kv/app/config"
    keys = t.secrets.kv.v1.list_secrets(path="app", mount_point="kv")["data"]["keys"]
    assert sorted(keys) == ["config", "denied"], f"reader lists kv/app: {keys}"
    e = expect_raises(hexc.Forbidden, t.secrets.kv.v1.read_secret, path="app/denied", mount_point="kv")
    errors_parsed(e)
    expect_raises(hexc.Forbidden, t.secrets.kv.v1.read_secret, path="other/x", mount_point="kv")
    expect_raises(hexc.Forbidden, t.secrets.kv.v1.create_or_update_secret, path="app/config", secret={"a": "b"},
                  method="PUT", mount_point="kv")
    expect_raises(hexc.Forbidden, t.sys.list_policies)
    expect_raises(hexc.Forbidden, t.sys.enable_auth_method, "approle", path="sneaky")
    # Vault's default policy does not allow auth/token/create.
    expect_raises(hexc.Forbidden, t.auth.token.create, policies=["reader"])


@step
def capabilities():
    t = new_client(STATE["t1"])
    paths = ["kv/app/config", "kv/app/denied", "kv/other/x"]
    r = t.sys.get_capabilities(paths)
    d = data_of(r, "sys.get_capabilities (capabilities-self)")
    assert d.get("kv/app/config") == ["list", "read"], f"capabilities on kv/app/config: {d}"
    assert d.get("kv/app/denied") == ["deny"], f"capabilities on kv/app/denied: {d}"
    assert d.get("kv/other/x") == ["deny"], f"capabilities on kv/other/x: {d}"
    assert r.get("kv/app/config") == ["list", "read"], f"capabilities should also be at the top level: {sorted(r)}"
    d = t.sys.get_capabilities(["auth/token/lookup-self", "auth/token/renew-self"])["data"]
    assert d["auth/token/lookup-self"] == ["read"], f"default policy on lookup-self: {d}"
    assert d["auth/token/renew-self"] == ["update"], f"default policy on renew-self: {d}"
    # The legacy single-path form, through the raw adapter: "path" in, "capabilities" out.
    r = t.adapter.post("/v1/sys/capabilities-self", json={"path": "kv/app/config"})
    d = data_of(r, "POST sys/capabilities-self {path}")
    assert d.get("capabilities") == ["list", "read"], f"single-path capabilities-self: {d}"
    assert r.get("capabilities") == ["list", "read"], f"single path: 'capabilities' at the top level: {sorted(r)}"
    c = root()
    d = data_of(c.sys.get_capabilities(["kv/app/config"], token=STATE["t1"]), "sys.get_capabilities(token=)")
    assert d["kv/app/config"] == ["list", "read"] and d["capabilities"] == ["list", "read"], f"sys/capabilities: {d}"
    d = data_of(c.sys.get_capabilities(["kv/app/denied"], accessor=STATE["t1_accessor"]), "get_capabilities(accessor=)")
    assert d["kv/app/denied"] == ["deny"], f"sys/capabilities-accessor: {d}"
    d = c.sys.get_capabilities(["kv/anything"])["data"]
    assert d["kv/anything"] == ["root"], f"root capabilities: {d}"


@step
def token_renew_self():
    t = new_client(STATE["t1"])
    r = t.auth.token.renew_self(increment="2h")
    a = auth_of(r, "auth.token.renew_self")
    assert a["client_token"] == STATE["t1"] and a["accessor"] == STATE["t1_accessor"], f"renew_self auth: {a}"
    assert a["lease_duration"] == 7200, f"renew_self(increment=2h) lease_duration: {a}"
    assert a["renewable"] is True and a["policies"] == ["default", "reader"], f"renew_self auth: {a}"
    ttl = t.auth.token.lookup_self()["data"]["ttl"]
    assert 7100 < ttl <= 7200, f"ttl after renew_self(2h): {ttl}"
    a = auth_of(t.auth.token.renew_self(), "auth.token.renew_self()")
    assert a["lease_duration"] > 0, f"renew_self without increment: {a}"


@step
def token_renew_by_other():
    c = root()
    a = auth_of(c.auth.token.renew(STATE["t1"], increment="3h"), "auth.token.renew")
    assert a["lease_duration"] == 10800, f"renew(increment=3h) lease_duration: {a}"
    assert a["accessor"] == STATE["t1_accessor"], f"renew returns the renewed token's accessor: {a}"
    ttl = c.auth.token.lookup(STATE["t1"])["data"]["ttl"]
    assert 10700 < ttl <= 10800, f"ttl after renew(3h): {ttl}"


@step
def token_not_renewable():
    c = root()
    a = auth_of(c.auth.token.create(policies=["reader"], ttl="1h", renewable=False), "create(renewable=False)")
    assert a["renewable"] is False, f"renewable=False: {a}"
    t = new_client(a["client_token"])
    assert t.auth.token.lookup_self()["data"]["renewable"] is False, "lookup_self renewable"
    e = expect_raises(hexc.InvalidRequest, t.auth.token.renew_self, increment="1h")
    errors_parsed(e)
    expect_raises(hexc.InvalidRequest, c.auth.token.renew, a["client_token"])
    c.auth.token.revoke(a["client_token"])


@step
def token_explicit_max_ttl_and_period():
    c = root()
    a = auth_of(c.auth.token.create(policies=["reader"], ttl="1h", explicit_max_ttl="2h"), "create(explicit_max_ttl)")
    t = new_client(a["client_token"])
    assert t.auth.token.lookup_self()["data"]["explicit_max_ttl"] == 7200, "explicit_max_ttl in lookup"
    r = t.auth.token.renew_self(increment="5h")
    assert 7100 < auth_of(r, "renew_self past explicit_max_ttl")["lease_duration"] <= 7200, f"capped renewal: {r}"
    t.auth.token.revoke_self()
    a = auth_of(c.auth.token.create(policies=["reader"], period="30m"), "create(period)")
    assert a["lease_duration"] == 1800, f"periodic token lease_duration: {a}"
    t = new_client(a["client_token"])
    d = t.auth.token.lookup_self()["data"]
    assert d.get("period") == 1800 and 1700 < d["ttl"] <= 1800, f"periodic token lookup: {d}"
    assert auth_of(t.auth.token.renew_self(), "renew periodic")["lease_duration"] == 1800, "periodic renewal"
    t.auth.token.revoke_self()


@step
def token_num_uses_counted():
    c = root()
    a = auth_of(c.auth.token.create(policies=["reader"], ttl="1h", num_uses=3), "create(num_uses=3)")
    assert a["num_uses"] == 3, f"auth.num_uses: {a}"
    tok = a["client_token"]
    assert c.auth.token.lookup(tok)["data"]["num_uses"] == 3, "a lookup by another token does not use it"
    t = new_client(tok)
    assert kv_read(t, "app/config")["user"] == "svc", "first use"
    assert c.auth.token.lookup(tok)["data"]["num_uses"] == 2, "num_uses after one use"
    assert kv_read(t, "app/config")["user"] == "svc", "second use"
    assert kv_read(t, "app/config")["user"] == "svc", "third (last) use"
    expect_raises(hexc.Forbidden, t.secrets.kv.v1.read_secret, path="app/config", mount_point="kv")
    assert t.is_authenticated() is False, "is_authenticated() with a used-up token"


@step
def token_num_uses_lookup_self():
    # Vault counts the use before the handler runs, so lookup-self of a fresh
    # 3-use token reports the 2 uses left (token_store.go UseToken, called
    # from request_handling.go before routing).
    c = root()
    a = auth_of(c.auth.token.create(policies=["reader"], ttl="1h", num_uses=3), "create(num_uses=3)")
    t = new_client(a["client_token"])
    d = t.auth.token.lookup_self()["data"]
    assert d["num_uses"] == 2, f"lookup_self on a fresh 3-use token: Vault reports num_uses=2 (this use already counted), got {d['num_uses']}"
    c.auth.token.revoke(a["client_token"])


@step
def token_revoke_accessor():
    c = root()
    a = auth_of(c.auth.token.create(policies=["reader"], ttl="1h"), "create")
    t = new_client(a["client_token"])
    assert t.is_authenticated() is True, "before revoke_accessor"
    is_no_content(c.auth.token.revoke_accessor(a["accessor"]), "auth.token.revoke_accessor")
    e = expect_raises(hexc.Forbidden, t.auth.token.lookup_self)
    errors_parsed(e)
    expect_raises(hexc.Forbidden, t.secrets.kv.v1.read_secret, path="app/config", mount_point="kv")
    assert t.is_authenticated() is False, "is_authenticated() after revoke_accessor"
    expect_raises(hexc.InvalidRequest, c.auth.token.lookup_accessor, a["accessor"])


@step
def token_revoke_with_children():
    c = root()
    a = auth_of(c.auth.token.create(policies=["reader", "creator"], ttl="1h"), "create(reader, creator)")
    parent = new_client(a["client_token"])
    ca = auth_of(parent.auth.token.create(policies=["reader"], ttl="30m"), "child create by a non-root token")
    assert ca["policies"] == ["default", "reader"] and ca["orphan"] is False, f"child: {ca}"
    # A child cannot get a policy its parent does not have (Vault: 400).
    e = expect_raises(hexc.InvalidRequest, parent.auth.token.create, policies=["orphan-maker"])
    errors_parsed(e)
    child = new_client(ca["client_token"])
    assert kv_read(child, "app/config")["user"] == "svc", "child reads kv"
    is_no_content(c.auth.token.revoke(a["client_token"]), "auth.token.revoke")
    expect_raises(hexc.Forbidden, parent.auth.token.lookup_self)
    expect_raises(hexc.Forbidden, child.secrets.kv.v1.read_secret, path="app/config", mount_point="kv")
    assert parent.is_authenticated() is False and child.is_authenticated() is False, "revoked tokens"
    STATE["revoked"] = a["client_token"]


@step
def revoked_token_lookup_is_forbidden():
    # Vault's handleLookup: `if out == nil { return ErrorResponse("bad token"), ErrPermissionDenied }`
    # -> 403 {"errors": ["bad token"]}, which hvac raises as Forbidden.
    e = expect_raises(hexc.Forbidden, root().auth.token.lookup, STATE["revoked"])
    errors_parsed(e)
    expect_raises(hexc.Forbidden, root().lookup_token, STATE["revoked"])


@step
def token_create_orphan():
    c = root()
    a = auth_of(c.auth.token.create_orphan(policies=["reader"], ttl="1h", meta={"k": "v"}), "auth.token.create_orphan")
    assert a["orphan"] is True and a["policies"] == ["default", "reader"], f"create_orphan: {a}"
    d = new_client(a["client_token"]).auth.token.lookup_self()["data"]
    assert d["orphan"] is True and d["path"] == "auth/token/create-orphan", f"orphan lookup_self: {d}"
    a2 = auth_of(c.auth.token.create(policies=["reader"], no_parent=True), "create(no_parent=True) by root")
    assert a2["orphan"] is True, f"no_parent=True: {a2}"
    # An orphan outlives the token that made it.
    p = auth_of(c.auth.token.create(policies=["reader", "creator"], ttl="1h"), "create(parent)")
    pc = new_client(p["client_token"])
    e = expect_raises(hexc.InvalidRequest, pc.auth.token.create, policies=["reader"], no_parent=True)
    errors_parsed(e)
    STATE["orphan_root_made"] = a["client_token"]


@step
def token_create_orphan_without_sudo():
    # Vault's token store sudo-protects only "revoke-orphan/*" and "accessors*":
    # "update" on auth/token/create-orphan is enough to make an orphan.
    c = root()
    p = auth_of(c.auth.token.create(policies=["reader", "orphan-maker"], ttl="1h"), "create(reader, orphan-maker)")
    pc = new_client(p["client_token"])
    o = auth_of(pc.auth.token.create_orphan(policies=["reader"], ttl="10m"), "create_orphan by a non-root token")
    assert o["orphan"] is True, f"create_orphan by a non-root token: {o}"
    c.auth.token.revoke(p["client_token"])
    oc = new_client(o["client_token"])
    assert oc.is_authenticated() is True, "an orphan survives the revocation of the token that made it"
    assert kv_read(oc, "app/config")["user"] == "svc", "orphan still reads kv"
    oc.auth.token.revoke_self()


@step
def token_revoke_self():
    t = new_client(STATE["orphan_root_made"])
    assert t.is_authenticated() is True, "before revoke_self"
    is_no_content(t.auth.token.revoke_self(), "auth.token.revoke_self")
    expect_raises(hexc.Forbidden, t.auth.token.lookup_self)
    assert t.is_authenticated() is False, "after revoke_self"
    # The first token is untouched by all of this.
    assert new_client(STATE["t1"]).is_authenticated() is True, "unrelated token still valid"


# ---------------------------------------------------------------- approle


@step
def approle_create_and_read_role():
    c = root()
    ar = c.auth.approle
    r = ar.create_or_update_approle(
        "app1", token_policies=["reader"], token_ttl="20m", token_max_ttl="1h", secret_id_ttl="1h"
    )
    is_no_content(r, "create_or_update_approle(app1)")
    is_no_content(ar.create_or_update_approle("app2", token_policies=["reader", "creator"]), "create app2")
    d = data_of(ar.read_role("app1"), "approle.read_role")
    assert d["token_policies"] == ["reader"], f"token_policies: {d}"
    assert d["token_ttl"] == 1200 and d["token_max_ttl"] == 3600, f"token_ttl/token_max_ttl: {d}"
    assert d["secret_id_ttl"] == 3600 and d["secret_id_num_uses"] == 0, f"secret_id_ttl/num_uses: {d}"
    assert d["bind_secret_id"] is True, f"bind_secret_id defaults to true: {d}"
    d = data_of(ar.list_roles(), "approle.list_roles")
    assert sorted(d["keys"]) == ["app1", "app2"], f"list_roles: {d}"


@step
def approle_role_id_and_secret_id():
    ar = root().auth.approle
    d = data_of(ar.read_role_id("app1"), "approle.read_role_id")
    assert isinstance(d.get("role_id"), str) and d["role_id"], f"role_id: {d}"
    STATE["role_id"] = d["role_id"]
    assert ar.read_role_id("app2")["data"]["role_id"] != d["role_id"], "role IDs differ per role"
    d = data_of(ar.generate_secret_id("app1", metadata={"env": "interop"}), "approle.generate_secret_id")
    assert isinstance(d.get("secret_id"), str) and d["secret_id"], f"secret_id: {d}"
    assert isinstance(d.get("secret_id_accessor"), str) and d["secret_id_accessor"], f"secret_id_accessor: {d}"
    assert d["secret_id_accessor"] != d["secret_id"], "accessor equals secret id"
    assert d["secret_id_ttl"] == 3600 and d["secret_id_num_uses"] == 0, f"generate_secret_id: {d}"
    STATE.update(secret_id=d["secret_id"], secret_id_accessor=d["secret_id_accessor"])


@step
def approle_read_secret_id():
    ar = root().auth.approle
    d = data_of(ar.read_secret_id("app1", STATE["secret_id"]), "approle.read_secret_id")
    assert d["secret_id_accessor"] == STATE["secret_id_accessor"], f"read_secret_id accessor: {d}"
    assert d["metadata"] == {"env": "interop"}, f"read_secret_id metadata: {d}"
    assert d["secret_id_ttl"] == 3600 and d["secret_id_num_uses"] == 0, f"read_secret_id ttl/uses: {d}"
    for k in ("creation_time", "expiration_time", "last_updated_time"):
        assert isinstance(d.get(k), str) and d[k], f"read_secret_id {k}: {d}"
    assert "secret_id" not in d, f"lookup must not echo the secret id: {d}"


@step
def approle_login():
    c = new_client()
    r = c.auth.approle.login(role_id=STATE["role_id"], secret_id=STATE["secret_id"])
    a = auth_of(r, "approle.login")
    assert c.token == a["client_token"], "login(use_token=True) sets the client's token"
    assert a["policies"] == ["default", "reader"], f"approle login policies: {a}"
    # Vault: the secret ID's metadata plus role_name (path_login.go).
    assert a["metadata"] == {"env": "interop", "role_name": "app1"}, f"approle login metadata: {a}"
    assert a["lease_duration"] == 1200 and a["renewable"] is True, f"approle login lease: {a}"
    assert c.is_authenticated() is True, "is_authenticated() after approle login"
    assert kv_read(c, "app/config") == {"user": "svc", "password": "pw-1"}, "approle token reads kv"
    expect_raises(hexc.Forbidden, c.secrets.kv.v1.read_secret, path="other/x", mount_point="kv")
    d = c.auth.token.lookup_self()["data"]
    assert d["path"] == "auth/approle/login" and d["display_name"] == "approle", f"approle token lookup: {d}"
    assert d["meta"] == {"env": "interop", "role_name": "app1"}, f"approle token meta: {d}"
    # use_token=False leaves the client's token alone.
    c2 = new_client()
    r = c2.auth.approle.login(role_id=STATE["role_id"], secret_id=STATE["secret_id"], use_token=False)
    assert auth_of(r, "approle.login(use_token=False)") and c2.token is None, "use_token=False"


@step
def approle_login_errors():
    c = new_client()
    e = expect_raises(hexc.InvalidRequest, c.auth.approle.login, role_id=STATE["role_id"], secret_id="wrong-secret")
    errors_parsed(e)
    assert c.token is None, "a failed login leaves the token unset"


@step
def approle_destroy_secret_id():
    ar = root().auth.approle
    is_no_content(ar.destroy_secret_id("app1", STATE["secret_id"]), "approle.destroy_secret_id")
    expect_raises(hexc.InvalidRequest, new_client().auth.approle.login, role_id=STATE["role_id"], secret_id=STATE["secret_id"])


@step
def approle_read_destroyed_secret_id():
    # Vault's pathRoleSecretIDLookupUpdate: `if secretIDEntry == nil { return nil, nil }`
    # -> an update with no response -> 204, which hvac returns as the Response.
    r = root().auth.approle.read_secret_id("app1", STATE["secret_id"])
    is_no_content(r, "read_secret_id of a destroyed secret id (Vault: 204)")


@step
def approle_delete_role():
    ar = root().auth.approle
    sid = ar.generate_secret_id("app2")["data"]["secret_id"]
    role_id2 = ar.read_role_id("app2")["data"]["role_id"]
    is_no_content(ar.delete_role("app1"), "approle.delete_role(app1)")
    assert ar.list_roles()["data"]["keys"] == ["app2"], "list_roles after delete"
    expect_raises(hexc.InvalidPath, ar.read_role, "app1")
    is_no_content(ar.delete_role("app2"), "approle.delete_role(app2)")
    # An empty list is a 404 in Vault.
    expect_raises(hexc.InvalidPath, ar.list_roles)
    expect_raises(hexc.InvalidRequest, new_client().auth.approle.login, role_id=role_id2, secret_id=sid)


# ---------------------------------------------------------------- userpass


@step
def userpass_create_and_list():
    up = root().auth.userpass
    is_no_content(up.create_or_update_user("alice", password="alice-pass-1", policies=["reader"]), "create_or_update_user(alice)")
    is_no_content(up.create_or_update_user("bob", password="bob-pass-1", policies="reader,default", token_ttl="30m"),
                  "create_or_update_user(bob, kwargs)")
    d = data_of(up.list_user(), "userpass.list_user")
    assert sorted(d["keys"]) == ["alice", "bob"], f"list_user: {d}"


@step
def userpass_read_user():
    up = root().auth.userpass
    d = data_of(up.read_user("alice"), "userpass.read_user(alice)")
    assert d["token_policies"] == ["reader"], f"alice token_policies: {d}"
    assert "password" not in d and "password_hash" not in d, f"read_user must not return the password: {d}"
    d = up.read_user("bob")["data"]
    assert d["token_policies"] == ["default", "reader"], f"bob token_policies (from a comma string): {d}"
    assert d["token_ttl"] == 1800, f"bob token_ttl (extra kwarg): {d}"
    expect_raises(hexc.InvalidPath, up.read_user, "nobody")


@step
def userpass_login():
    c = new_client()
    r = c.auth.userpass.login("alice", "alice-pass-1")
    a = auth_of(r, "userpass.login(alice)")
    assert c.token == a["client_token"], "login sets the client's token"
    assert a["policies"] == ["default", "reader"], f"alice login policies: {a}"
    assert a["metadata"] == {"username": "alice"}, f"alice login metadata: {a}"
    assert a["lease_duration"] == SYSTEM_TTL and a["renewable"] is True, f"alice login lease: {a}"
    assert c.is_authenticated() is True, "is_authenticated() after userpass login"
    assert kv_read(c, "app/config")["user"] == "svc", "userpass token reads kv"
    expect_raises(hexc.Forbidden, c.secrets.kv.v1.read_secret, path="app/denied", mount_point="kv")
    d = c.lookup_token()["data"]
    assert d["display_name"] == "userpass-alice" and d["path"] == "auth/userpass/login/alice", f"lookup: {d}"
    a = auth_of(new_client().auth.userpass.login("bob", "bob-pass-1"), "userpass.login(bob)")
    assert a["lease_duration"] == 1800, f"bob's token_ttl applies: {a}"
    # User names are case-insensitive.
    auth_of(new_client().auth.userpass.login("ALICE", "alice-pass-1"), "userpass.login(ALICE)")


@step
def userpass_wrong_password():
    c = new_client()
    e = expect_raises(hexc.InvalidRequest, c.auth.userpass.login, "alice", "not-the-password")
    errors_parsed(e)
    assert c.token is None, "a failed login leaves the token unset"
    e2 = expect_raises(hexc.InvalidRequest, c.auth.userpass.login, "nobody", "whatever")
    assert e2.errors == e.errors, f"unknown user and wrong password must look the same: {e2.errors} vs {e.errors}"


@step
def userpass_update_password():
    up = root().auth.userpass
    is_no_content(up.update_password_on_user("alice", "alice-pass-2"), "update_password_on_user(alice)")
    expect_raises(hexc.InvalidRequest, new_client().auth.userpass.login, "alice", "alice-pass-1")
    auth_of(new_client().auth.userpass.login("alice", "alice-pass-2"), "login with the new password")
    assert up.read_user("alice")["data"]["token_policies"] == ["reader"], "password change keeps the policies"
    expect_raises(hexc.InvalidRequest, up.update_password_on_user, "nobody", "x")


@step
def userpass_delete_user():
    up = root().auth.userpass
    is_no_content(up.delete_user("bob"), "userpass.delete_user(bob)")
    assert up.list_user()["data"]["keys"] == ["alice"], "list_user after delete"
    expect_raises(hexc.InvalidPath, up.read_user, "bob")
    expect_raises(hexc.InvalidRequest, new_client().auth.userpass.login, "bob", "bob-pass-1")


@step
def userpass_on_custom_mount():
    c = root()
    is_no_content(c.sys.enable_auth_method("userpass", path="people"), "enable_auth_method(userpass at people)")
    up = c.auth.userpass
    is_no_content(up.create_or_update_user("carol", password="carol-pass", policies=["reader"], mount_point="people"),
                  "create_or_update_user(mount_point=people)")
    expect_raises(hexc.InvalidPath, up.read_user, "carol")  # not on the default mount
    a = auth_of(new_client().auth.userpass.login("carol", "carol-pass", mount_point="people"), "login(mount_point=people)")
    assert a["policies"] == ["default", "reader"], f"carol: {a}"
    is_no_content(c.sys.disable_auth_method("people"), "disable_auth_method(people)")
    # Vault revokes the tokens a mount issued when the mount goes away.
    assert new_client(a["client_token"]).is_authenticated() is False, "tokens of a disabled auth mount are revoked"


# ---------------------------------------------------------------- jwt

JWT_ISS = "https://idp.example.com"
K8S_ISS = "https://kubernetes.default.svc.cluster.local"


def jwt_claims(**extra):
    now = int(time.time())
    claims = {"iss": JWT_ISS, "sub": "alice@example.com", "aud": "vault-interop", "iat": now, "nbf": now - 5,
              "exp": now + 600}
    claims.update(extra)
    return claims


@step
def jwt_configure():
    c = root()
    STATE["keydir"] = tempfile.TemporaryDirectory(prefix="hvac-auth-")
    STATE["idp"] = RsaKey(STATE["keydir"].name, "idp")
    STATE["other_key"] = RsaKey(STATE["keydir"].name, "other")
    is_no_content(c.sys.enable_auth_method("jwt"), "enable_auth_method(jwt)")
    r = c.auth.jwt.configure(jwt_validation_pubkeys=[STATE["idp"].public_pem], bound_issuer=JWT_ISS)
    is_no_content(r, "auth.jwt.configure")
    d = data_of(c.auth.jwt.read_config(), "auth.jwt.read_config")
    assert d["bound_issuer"] == JWT_ISS, f"bound_issuer: {d}"
    keys = d["jwt_validation_pubkeys"]
    assert [k.strip() for k in keys] == [STATE["idp"].public_pem.strip()], f"jwt_validation_pubkeys: {keys}"


@step
def jwt_roles():
    c = root()
    r = c.auth.jwt.create_role(
        "dev",
        user_claim="sub",
        allowed_redirect_uris=[],
        bound_audiences=["vault-interop"],
        bound_claims={"groups": ["eng"]},
        token_policies=["reader"],
        token_ttl="15m",
    )
    is_no_content(r, "auth.jwt.create_role(dev)")
    d = data_of(c.auth.jwt.read_role("dev"), "auth.jwt.read_role")
    assert d["role_type"] == "jwt" and d["user_claim"] == "sub", f"jwt role: {d}"
    assert d["bound_audiences"] == ["vault-interop"], f"bound_audiences: {d}"
    assert d["bound_claims"] == {"groups": ["eng"]}, f"bound_claims: {d}"
    assert d["token_policies"] == ["reader"] and d["token_ttl"] == 900, f"token_*: {d}"
    assert data_of(c.auth.jwt.list_roles(), "auth.jwt.list_roles")["keys"] == ["dev"], "jwt list_roles"


@step
def jwt_login():
    c = new_client()
    token = STATE["idp"].sign(jwt_claims(groups=["eng", "ops"]))
    a = auth_of(c.auth.jwt.jwt_login("dev", token), "auth.jwt.jwt_login")
    assert c.token == a["client_token"], "jwt_login sets the client's token"
    assert a["policies"] == ["default", "reader"] and a["lease_duration"] == 900, f"jwt login: {a}"
    assert a["metadata"] == {"role": "dev"}, f"jwt login metadata: {a}"
    assert kv_read(c, "app/config")["user"] == "svc", "jwt token reads kv"
    assert c.lookup_token()["data"]["path"] == "auth/jwt/login", "jwt token path"


@step
def jwt_login_rejections():
    idp, other = STATE["idp"], STATE["other_key"]
    for what, token in (
        ("wrong audience", idp.sign(jwt_claims(groups=["eng"], aud="someone-else"))),
        ("bound claim not met", idp.sign(jwt_claims(groups=["sales"]))),
        ("expired", idp.sign(jwt_claims(groups=["eng"], iat=int(time.time()) - 7200, nbf=int(time.time()) - 7200,
                                        exp=int(time.time()) - 3600))),
        ("signed by another key", other.sign(jwt_claims(groups=["eng"]))),
    ):
        c = new_client()
        try:
            e = expect_raises(hexc.InvalidRequest, c.auth.jwt.jwt_login, "dev", token)
        except AssertionError as err:
            raise AssertionError(f"{what}: {err}") from None
        errors_parsed(e)
        assert c.token is None, f"{what}: a failed login leaves the token unset"


@step
def jwt_delete_role():
    c = root()
    is_no_content(c.auth.jwt.delete_role("dev"), "auth.jwt.delete_role")
    expect_raises(hexc.InvalidPath, c.auth.jwt.read_role, "dev")
    expect_raises(hexc.InvalidPath, c.auth.jwt.list_roles)


# ---------------------------------------------------------------- kubernetes


def sa_claims(ns, sa):
    now = int(time.time())
    return {"iss": K8S_ISS, "aud": ["https://kubernetes.default.svc"], "sub": f"system:serviceaccount:{ns}:{sa}",
            "iat": now, "nbf": now - 5, "exp": now + 600,
            "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa, "uid": "0b6a4e1c-0001"}}}


@step
def kubernetes_configure_and_roles():
    c = root()
    sa_key = RsaKey(STATE["keydir"].name, "sa-signer")
    STATE["sa_key"] = sa_key
    is_no_content(c.sys.enable_auth_method("kubernetes"), "enable_auth_method(kubernetes)")
    r = c.auth.kubernetes.configure("https://10.96.0.1:443", pem_keys=[sa_key.cert_pem], issuer=K8S_ISS)
    is_no_content(r, "auth.kubernetes.configure")
    d = c.auth.kubernetes.read_config()  # hvac returns the data object
    assert isinstance(d, dict) and d.get("kubernetes_host") == "https://10.96.0.1:443", f"kubernetes read_config: {d!r}"
    assert d.get("issuer") == K8S_ISS, f"issuer: {d}"
    assert [k.strip() for k in d.get("pem_keys", [])] == [sa_key.cert_pem.strip()], f"pem_keys: {d}"
    r = c.auth.kubernetes.create_role("web", bound_service_account_names=["web"],
                                      bound_service_account_namespaces="prod", policies=["reader"], ttl="10m")
    is_no_content(r, "auth.kubernetes.create_role(web)")
    d = c.auth.kubernetes.read_role("web")
    assert isinstance(d, dict), f"kubernetes read_role: {d!r}"
    assert d["bound_service_account_names"] == ["web"], f"bound names: {d}"
    assert d["bound_service_account_namespaces"] == ["prod"], f"bound namespaces: {d}"
    assert d["token_policies"] == ["reader"] and d["token_ttl"] == 600, f"token_* (hvac sends policies/ttl): {d}"
    assert c.auth.kubernetes.list_roles() == {"keys": ["web"]}, "kubernetes list_roles"


@step
def kubernetes_login():
    # Real Vault would also ask the cluster's TokenReview API; this server
    # verifies the token locally against pem_keys. The request and the answer
    # are Vault's either way, which is what hvac sees.
    key = STATE["sa_key"]
    c = new_client()
    a = auth_of(c.auth.kubernetes.login("web", key.sign(sa_claims("prod", "web"))), "auth.kubernetes.login")
    assert c.token == a["client_token"], "kubernetes login sets the client's token"
    assert a["policies"] == ["default", "reader"] and a["lease_duration"] == 600, f"kubernetes login: {a}"
    want = {"role": "web", "service_account_name": "web", "service_account_namespace": "prod",
            "service_account_uid": "0b6a4e1c-0001"}
    got = {k: v for k, v in a["metadata"].items() if k in want}
    assert got == want, f"kubernetes login metadata: {a['metadata']}"
    assert kv_read(c, "app/config")["user"] == "svc", "kubernetes token reads kv"
    for what, token in (
        ("namespace not bound", key.sign(sa_claims("dev", "web"))),
        ("service account not bound", key.sign(sa_claims("prod", "admin"))),
    ):
        try:
            e = expect_raises(hexc.InvalidRequest, new_client().auth.kubernetes.login, "web", token)
        except AssertionError as err:
            raise AssertionError(f"{what}: {err}") from None
        errors_parsed(e)
    is_no_content(root().auth.kubernetes.delete_role("web"), "auth.kubernetes.delete_role")
    expect_raises(hexc.InvalidPath, root().auth.kubernetes.read_role, "web")


if __name__ == "__main__":
    sys.exit(run())
