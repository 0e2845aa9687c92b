"""Runs `kinetail check` on every kinetail.toml held by a ConfigMap of the
Kubernetes manifests given: a manifest whose configuration kinetail
refuses fails the tests, as its schema would.

Usage: configs.py KINETAIL MANIFEST...
"""
import os
import subprocess
import sys
import tempfile

import yaml


def main() -> int:
    kinetail, manifests = sys.argv[1], sys.argv[2:]
    checked = 0
    for path in manifests:
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for doc in docs:
            if doc.get("kind") != "ConfigMap":
                continue
            text = doc.get("data", {}).get("kinetail.toml")
            if text is None:
                continue
            name = doc["metadata"]["name"]
            with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as t:
                t.write(text)
            env = dict(os.environ, AWS_REGION="eu-west-1")
            out = subprocess.run(
                [kinetail, "check", "--config", t.name],
                capture_output=True, text=True, env=env,
            )
            os.unlink(t.name)
            if out.returncode != 0:
                print(f"{path}: ConfigMap {name}: kinetail check refused it:\n{out.stderr}")
                return 1
            print(f"{path}: ConfigMap {name}: kinetail check accepts it")
            checked += 1
    if checked == 0:
        print("no kinetail.toml found in the manifests")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
