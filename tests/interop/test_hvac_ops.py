#!/usr/bin/env python3
"""Interop check: the operations APIs of issue 18 driven by the real hvac
client (2.4.0): audit devices (sys/audit, sys/audit-hash), rate-limit quotas
(sys/quotas), and storage snapshots through hvac's raft snapshot calls
(sys/storage/raft/snapshot), against a fresh, uninitialized server:

    VAULT_ADDR=http://127.0.0.1:8200 python3 test_hvac_ops.py

Only hvac's public API is used. Every check prints one line; the script stops
at the first failure and ends with "N passed, 0 failed".
"""

import hashlib
import json
import os
import sys
import tempfile

from hvac_harness import (  # shared set-up, helpers, runner
    STATE,
    expect_raises,
    hexc,
    is_no_content,
    new_client,
    run,
    status_of,
    step,
)

CANARY = "HVAC-OPS-CANARY-5b1e"


def root():
    return STATE["root_client"]


def written(r, what):
    """A write answered 204 (hvac: the Response) or 200 with a body (hvac: a dict)."""
    assert isinstance(r, dict) or status_of(r) in (200, 204), f"{what}: {r!r}"


@step
def init_unseal_and_mount():
    c = new_client()
    r = c.sys.initialize(secret_shares=1, secret_threshold=1)
    assert isinstance(r, dict) and r.get("root_token"), f"initialize returned {r!r}"
    STATE["key"] = r["keys"][0]
    assert c.sys.submit_unseal_key(STATE["key"])["sealed"] is False
    STATE["root_client"] = new_client(r["root_token"])
    is_no_content(root().sys.enable_secrets_engine("kv", path="kv", options={"version": "2"}), "enable kv v2")


# ---------------------------------------------------------------- audit


@step
def enable_file_audit_device():
    d = tempfile.mkdtemp(prefix="hvac-audit-")
    STATE["audit_file"] = os.path.join(d, "audit.log")
    r = root().sys.enable_audit_device("file", description="interop", options={"file_path": STATE["audit_file"]})
    is_no_content(r, "enable_audit_device")
    devices = root().sys.list_enabled_audit_devices()["data"]
    dev = devices.get("file/")
    assert dev and dev["type"] == "file" and dev["description"] == "interop", f"list_enabled_audit_devices: {devices}"
    assert dev["options"]["file_path"] == STATE["audit_file"], f"options: {dev['options']}"


@step
def audit_device_needs_sudo():
    root().sys.create_or_update_policy("ops", 'path "sys/audit*" { capabilities = ["create", "read", "update", "delete", "list"] }')
    t = root().auth.token.create(policies=["ops"])["auth"]["client_token"]
    STATE["ops_token"] = t
    ops = new_client(t)
    expect_raises(hexc.Forbidden, ops.sys.list_enabled_audit_devices)
    expect_raises(hexc.Forbidden, ops.sys.enable_audit_device, "file", path="other", options={"file_path": "/tmp/x.log"})
    expect_raises(hexc.Forbidden, ops.sys.calculate_hash, "file", "x")


@step
def secrets_are_hmaced_and_calculate_hash_finds_them():
    root().secrets.kv.v2.create_or_update_secret(path="app", secret={"password": CANARY}, mount_point="kv")
    got = root().secrets.kv.v2.read_secret_version(path="app", mount_point="kv", raise_on_deleted_version=True)
    assert got["data"]["data"]["password"] == CANARY
    h = root().sys.calculate_hash("file", CANARY)["data"]["hash"]
    assert h.startswith("hmac-sha256:") and len(h) == len("hmac-sha256:") + 64, f"calculate_hash: {h!r}"
    with open(STATE["audit_file"], encoding="utf-8") as f:
        text = f.read()
    assert CANARY not in text, "the canary is in the audit file in the clear"
    assert h in text, "the secret's HMAC is not in the audit file"
    entries = [json.loads(line) for line in text.splitlines()]
    reads = [e for e in entries if e.get("type") == "response" and e["request"]["path"] == "kv/data/app"]
    assert reads, "no response entry for kv/data/app"
    assert reads[-1]["response"]["data"]["data"]["password"] == h, f"response entry: {reads[-1]}"
    # The token hvac sent is HMAC'd too.
    token = root().token
    assert token not in text, "the root token is in the audit file"


@step
def unknown_device_and_log_raw_are_refused():
    expect_raises(hexc.InvalidRequest, root().sys.enable_audit_device, "syslog", path="sys2")
    expect_raises(
        hexc.InvalidRequest,
        root().sys.enable_audit_device,
        "file",
        path="raw",
        options={"file_path": STATE["audit_file"] + ".raw", "log_raw": "true"},
    )


# ---------------------------------------------------------------- quotas


@step
def rate_limit_quota_crud():
    r = root().sys.create_or_update_quota(name="kvq", rate=1000.0, path="kv/", interval="1s")
    written(r, "create_or_update_quota")
    q = root().sys.read_quota("kvq")["data"]
    assert q["name"] == "kvq" and q["path"] == "kv/" and float(q["rate"]) == 1000.0, f"read_quota: {q}"
    assert "kvq" in root().sys.list_quotas()["data"]["keys"]
    # A quota that refuses: one request per minute on a path of its own.
    root().sys.create_or_update_quota(name="tight", rate=1.0, path="kv/data/tight", interval="1m")
    root().secrets.kv.v2.create_or_update_secret(path="tight", secret={"a": "b"}, mount_point="kv")
    e = expect_raises(hexc.RateLimitExceeded, root().secrets.kv.v2.read_secret_version, path="tight", mount_point="kv")
    assert "rate limit" in str(e).lower() or e.errors, f"429 error: {e}"
    is_no_content(root().sys.delete_quota("tight"), "delete_quota tight")
    root().secrets.kv.v2.read_secret_version(path="tight", mount_point="kv", raise_on_deleted_version=True)
    is_no_content(root().sys.delete_quota("kvq"), "delete_quota kvq")
    expect_raises(hexc.InvalidPath, root().sys.read_quota, "kvq")


# ---------------------------------------------------------------- snapshots


@step
def raft_snapshot_take_and_restore():
    r = root().sys.take_raft_snapshot()
    assert status_of(r) == 200, f"take_raft_snapshot: {r!r}"
    snap = r.content
    assert len(snap) > 0 and CANARY.encode() not in snap, "the snapshot holds a secret in the clear"
    STATE["snapshot_sha"] = hashlib.sha256(snap).hexdigest()
    # Change a secret after the snapshot; the restore brings the old one back.
    root().secrets.kv.v2.create_or_update_secret(path="app", secret={"password": "changed"}, mount_point="kv")
    # A non-sudo token cannot restore.
    expect_raises(hexc.Forbidden, new_client(STATE["ops_token"]).sys.restore_raft_snapshot, snap)
    # A damaged snapshot is refused with a clear 4xx, nothing restored.
    damaged = bytearray(snap)
    damaged[len(damaged) // 2] ^= 0x01
    expect_raises(hexc.InvalidRequest, root().sys.restore_raft_snapshot, bytes(damaged))
    got = root().secrets.kv.v2.read_secret_version(path="app", mount_point="kv", raise_on_deleted_version=True)
    assert got["data"]["data"]["password"] == "changed", "a refused restore changed nothing"
    r = root().sys.restore_raft_snapshot(snap)
    written(r, "restore_raft_snapshot")
    # The restored server is sealed; the same key unseals it.
    c = new_client()
    assert c.sys.read_seal_status()["sealed"] is True, "sealed after a restore"
    assert c.sys.submit_unseal_key(STATE["key"])["sealed"] is False
    got = root().secrets.kv.v2.read_secret_version(path="app", mount_point="kv", raise_on_deleted_version=True)
    assert got["data"]["data"]["password"] == CANARY, f"restored secret: {got['data']['data']}"


if __name__ == "__main__":
    sys.exit(run())
