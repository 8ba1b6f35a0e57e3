#!/usr/bin/env python3
"""Interop check: drive vault-server's KV v2 engine with the real hvac client (2.4.0).

Run against a freshly started, *uninitialized* server:

    VAULT_ADDR=http://127.0.0.1:8200 python3 test_hvac_kv2.py

The script initializes (1 share, threshold 1) and unseals the server with hvac,
mounts KV v2 at secret/ and then uses only hvac's public API
(client.secrets.kv.v2.*). Every check prints one line; the script stops at the
first failure with a non-zero exit status, and ends with "N passed, 0 failed"
when everything passed. It needs no test framework.
"""

import sys

from hvac_harness import (  # shared set-up, helpers, runner
    STATE,
    expect_raises,
    hexc,
    is_no_content,
    new_client,
    run,
    step,
)

MOUNT = "secret"






def kv():
    return STATE["root_client"].secrets.kv.v2


def version_meta(meta, what):
    """The write/metadata shape of one version: created_time, deletion_time, destroyed, version."""
    for k in ("created_time", "deletion_time", "destroyed", "version"):
        assert k in meta, f"{what}: version metadata lacks {k!r}: {meta!r}"
    return meta


def read_version(path, version=None, raise_on_deleted_version=True):
    return kv().read_secret_version(
        path=path, version=version, mount_point=MOUNT, raise_on_deleted_version=raise_on_deleted_version
    )


# ---------------------------------------------------------------- setup


@step
def init_unseal_and_mount():
    c = new_client()
    r = c.sys.initialize(secret_shares=1, secret_threshold=1)
    assert isinstance(r, dict) and r.get("root_token"), f"initialize returned {r!r}"
    s = c.sys.submit_unseal_key(r["keys"][0])
    assert s["sealed"] is False, f"unseal: {s!r}"
    root = new_client(r["root_token"])
    STATE["root_client"] = root
    is_no_content(
        root.sys.enable_secrets_engine("kv", path=MOUNT, options={"version": "2"}), "enable kv v2 at secret/"
    )
    mounts = root.sys.list_mounted_secrets_engines()["data"]
    m = mounts.get(f"{MOUNT}/")
    assert m and m["type"] == "kv" and m["options"].get("version") == "2", f"secret/ mount: {m!r}"


# ---------------------------------------------------------------- engine config


@step
def configure_and_read_configuration():
    is_no_content(kv().configure(max_versions=7, cas_required=False, mount_point=MOUNT), "configure")
    r = kv().read_configuration(mount_point=MOUNT)
    d = r["data"]
    assert d["max_versions"] == 7 and d["cas_required"] is False, f"read_configuration: {r!r}"
    assert d["delete_version_after"] == "0s", f"read_configuration delete_version_after: {r!r}"
    # Back to Vault's defaults (0 = 10 versions) for the rest of the script.
    is_no_content(kv().configure(max_versions=0, mount_point=MOUNT), "configure back")
    assert kv().read_configuration(mount_point=MOUNT)["data"]["max_versions"] == 0, "max_versions reset"


# ---------------------------------------------------------------- writes and reads


@step
def create_first_version():
    r = kv().create_or_update_secret(path="app/db", secret={"user": "alice", "pw": "s1"}, mount_point=MOUNT)
    assert isinstance(r, dict), f"create_or_update_secret returned {r!r}"
    m = version_meta(r["data"], "create v1")
    assert m["version"] == 1 and m["destroyed"] is False and m["deletion_time"] == "", f"create v1: {r!r}"


@step
def cas_write_and_cas_mismatch():
    r = kv().create_or_update_secret(path="app/db", secret={"user": "alice", "pw": "s2"}, cas=1, mount_point=MOUNT)
    assert r["data"]["version"] == 2, f"cas=1 write: {r!r}"
    expect_raises(
        hexc.InvalidRequest,
        kv().create_or_update_secret,
        path="app/db",
        secret={"pw": "stale"},
        cas=1,
        mount_point=MOUNT,
    )
    # cas=0: only if the key does not exist yet.
    expect_raises(
        hexc.InvalidRequest, kv().create_or_update_secret, path="app/db", secret={"x": 1}, cas=0, mount_point=MOUNT
    )
    r = kv().create_or_update_secret(path="app/api", secret={"token": "t"}, cas=0, mount_point=MOUNT)
    assert r["data"]["version"] == 1, f"cas=0 create: {r!r}"


@step
def read_secret_version_latest_and_specific():
    r = read_version("app/db")
    assert r["data"]["data"] == {"user": "alice", "pw": "s2"}, f"latest: {r!r}"
    m = version_meta(r["data"]["metadata"], "latest")
    assert m["version"] == 2 and m["deletion_time"] == "" and m["destroyed"] is False, f"latest metadata: {r!r}"
    r = read_version("app/db", version=1)
    assert r["data"]["data"] == {"user": "alice", "pw": "s1"}, f"version=1: {r!r}"
    assert r["data"]["metadata"]["version"] == 1, f"version=1 metadata: {r!r}"


@step
def read_secret_latest():
    r = kv().read_secret(path="app/db", mount_point=MOUNT, raise_on_deleted_version=True)
    assert r["data"]["data"] == {"user": "alice", "pw": "s2"}, f"read_secret: {r!r}"
    assert r["data"]["metadata"]["version"] == 2, f"read_secret metadata: {r!r}"


@step
def missing_secret_is_invalid_path():
    expect_raises(hexc.InvalidPath, read_version, "app/nope")
    expect_raises(hexc.InvalidPath, read_version, "app/nope", raise_on_deleted_version=False)
    expect_raises(hexc.InvalidPath, read_version, "app/db", version=99)


@step
def patch_merges_into_new_version():
    r = kv().patch(path="app/db", secret={"pw": "s3", "host": "db1"}, mount_point=MOUNT)
    assert r["data"]["version"] == 3, f"patch: {r!r}"
    r = read_version("app/db")
    assert r["data"]["data"] == {"user": "alice", "pw": "s3", "host": "db1"}, f"after patch: {r!r}"
    expect_raises(hexc.InvalidPath, kv().patch, path="app/nope", secret={"a": 1}, mount_point=MOUNT)


@step
def read_secret_metadata():
    r = kv().read_secret_metadata(path="app/db", mount_point=MOUNT)
    d = r["data"]
    for k in (
        "cas_required",
        "created_time",
        "current_version",
        "custom_metadata",
        "delete_version_after",
        "max_versions",
        "oldest_version",
        "updated_time",
        "versions",
    ):
        assert k in d, f"metadata lacks {k!r}: {r!r}"
    # Vault leaves oldest_version at 0 until versions are trimmed.
    assert d["current_version"] == 3 and d["oldest_version"] == 0, f"metadata versions: {r!r}"
    assert sorted(d["versions"]) == ["1", "2", "3"], f"metadata version keys: {r!r}"
    for v in d["versions"].values():
        assert {"created_time", "deletion_time", "destroyed"} <= set(v), f"metadata version entry: {v!r}"
        assert v["destroyed"] is False and v["deletion_time"] == "", f"metadata version entry: {v!r}"
    assert d["max_versions"] == 0 and d["cas_required"] is False, f"metadata settings: {r!r}"
    expect_raises(hexc.InvalidPath, kv().read_secret_metadata, path="app/nope", mount_point=MOUNT)


@step
def list_secrets():
    r = kv().list_secrets(path="app", mount_point=MOUNT)
    assert sorted(r["data"]["keys"]) == ["api", "db"], f"list app: {r!r}"
    r = kv().list_secrets(path="", mount_point=MOUNT)
    assert r["data"]["keys"] == ["app/"], f"list root: {r!r}"
    expect_raises(hexc.InvalidPath, kv().list_secrets, path="nothing-here", mount_point=MOUNT)


# ---------------------------------------------------------------- delete / undelete / destroy


@step
def delete_latest_version_and_raise_on_deleted_version():
    is_no_content(kv().delete_latest_version_of_secret(path="app/db", mount_point=MOUNT), "delete latest")
    expect_raises(hexc.InvalidPath, read_version, "app/db", raise_on_deleted_version=True)
    r = read_version("app/db", raise_on_deleted_version=False)
    assert isinstance(r, dict) and r.get("data", {}).get("data", "absent") is None, f"deleted version body: {r!r}"
    m = r["data"]["metadata"]
    assert m["version"] == 3 and m["deletion_time"] != "" and m["destroyed"] is False, f"deleted metadata: {r!r}"
    # Older versions stay readable.
    assert read_version("app/db", version=2)["data"]["data"]["pw"] == "s2", "version 2 after deleting 3"


@step
def delete_and_undelete_versions():
    is_no_content(kv().delete_secret_versions(path="app/db", versions=[1, 2], mount_point=MOUNT), "delete 1,2")
    expect_raises(hexc.InvalidPath, read_version, "app/db", version=1)
    vs = kv().read_secret_metadata(path="app/db", mount_point=MOUNT)["data"]["versions"]
    assert all(vs[k]["deletion_time"] != "" for k in ("1", "2", "3")), f"deleted versions in metadata: {vs!r}"
    is_no_content(kv().undelete_secret_versions(path="app/db", versions=[1, 3], mount_point=MOUNT), "undelete 1,3")
    assert read_version("app/db", version=1)["data"]["data"]["pw"] == "s1", "version 1 after undelete"
    assert read_version("app/db")["data"]["data"]["pw"] == "s3", "latest after undelete"
    expect_raises(hexc.InvalidPath, read_version, "app/db", version=2)


@step
def destroy_versions():
    is_no_content(kv().destroy_secret_versions(path="app/db", versions=[1], mount_point=MOUNT), "destroy 1")
    # Destroyed, not deleted: deletion_time stays "", so hvac raises even with raise_on_deleted_version=False.
    e = expect_raises(hexc.InvalidPath, read_version, "app/db", version=1, raise_on_deleted_version=False)
    body = e.json
    assert body is None or body.get("data", {}).get("metadata", {}).get("destroyed") is True, (
        f"destroyed version 404 body: {body!r}"
    )
    v1 = kv().read_secret_metadata(path="app/db", mount_point=MOUNT)["data"]["versions"]["1"]
    assert v1["destroyed"] is True, f"metadata of destroyed version: {v1!r}"
    # Undelete does not bring back destroyed data.
    is_no_content(kv().undelete_secret_versions(path="app/db", versions=[1], mount_point=MOUNT), "undelete destroyed")
    expect_raises(hexc.InvalidPath, read_version, "app/db", version=1)


# ---------------------------------------------------------------- metadata settings


@step
def update_metadata_settings():
    is_no_content(
        kv().update_metadata(
            path="app/db",
            max_versions=2,
            cas_required=True,
            custom_metadata={"owner": "team-a", "env": "test"},
            mount_point=MOUNT,
        ),
        "update_metadata",
    )
    d = kv().read_secret_metadata(path="app/db", mount_point=MOUNT)["data"]
    assert d["max_versions"] == 2 and d["cas_required"] is True, f"metadata settings: {d!r}"
    assert d["custom_metadata"] == {"owner": "team-a", "env": "test"}, f"custom_metadata: {d!r}"
    # cas_required on the key: a write without cas is refused.
    expect_raises(hexc.InvalidRequest, kv().create_or_update_secret, path="app/db", secret={"a": 1}, mount_point=MOUNT)
    # custom_metadata shows up in a version read as well.
    r = read_version("app/db")
    assert r["data"]["metadata"]["custom_metadata"] == {"owner": "team-a", "env": "test"}, f"read custom_md: {r!r}"


@step
def max_versions_trims_old_versions():
    for i in (4, 5, 6):
        r = kv().create_or_update_secret(path="app/db", secret={"pw": f"s{i}"}, cas=i - 1, mount_point=MOUNT)
        assert r["data"]["version"] == i, f"write v{i}: {r!r}"
    d = kv().read_secret_metadata(path="app/db", mount_point=MOUNT)["data"]
    assert d["current_version"] == 6, f"current_version after trimming: {d!r}"
    assert sorted(d["versions"], key=int) == ["5", "6"], f"max_versions=2 should keep versions 5,6: {d['versions']!r}"
    assert d["oldest_version"] == 5, f"oldest_version after trimming: {d!r}"
    expect_raises(hexc.InvalidPath, read_version, "app/db", version=4)
    assert read_version("app/db", version=5)["data"]["data"] == {"pw": "s5"}, "version 5 after trimming"


# ---------------------------------------------------------------- delete everything


@step
def delete_metadata_and_all_versions():
    is_no_content(kv().delete_metadata_and_all_versions(path="app/db", mount_point=MOUNT), "delete metadata")
    expect_raises(hexc.InvalidPath, read_version, "app/db")
    expect_raises(hexc.InvalidPath, kv().read_secret_metadata, path="app/db", mount_point=MOUNT)
    assert kv().list_secrets(path="app", mount_point=MOUNT)["data"]["keys"] == ["api"], "list after delete"
    # The key starts over at version 1.
    r = kv().create_or_update_secret(path="app/db", secret={"fresh": True}, mount_point=MOUNT)
    assert r["data"]["version"] == 1, f"recreate after delete_metadata: {r!r}"


if __name__ == "__main__":
    sys.exit(run())
