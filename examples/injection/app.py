"""Example 4: a Python service that knows nothing about the vault.

It reads its database password the twelve-factor way (the DB_PASSWORD
environment variable) and its settings from an INI file (APP_CONFIG). Both
are handed to it by vaultctl: `vaultctl exec` puts the secrets in its
environment, `vaultctl agent` renders config.ini from config.ini.tmpl.

It prints what it got without showing a secret: the user names and the
first 8 hex digits of each password's SHA-256.
"""
import configparser
import hashlib
import json
import os
import sys


def fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:8]


def main() -> int:
    out = {}
    password = os.environ.get("DB_PASSWORD")
    if password is not None:
        out["env"] = {"db_user": os.environ.get("DB_USER"), "db_password_sha256_prefix": fingerprint(password)}
    config_path = os.environ.get("APP_CONFIG")
    if config_path:
        config = configparser.ConfigParser(interpolation=None)
        with open(config_path, encoding="utf-8") as f:
            config.read_file(f)
        db = config["database"]
        out["file"] = {"db_user": db["user"], "db_password_sha256_prefix": fingerprint(db["password"]),
                       "mode": oct(os.stat(config_path).st_mode & 0o777)}
    if not out:
        print("no DB_PASSWORD and no APP_CONFIG: run me under vaultctl exec or agent", file=sys.stderr)
        return 1
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
