#!/usr/bin/env python3
"""Offline checks of the Kubernetes manifests under deploy/kubernetes.

- Core kinds (v1, apps/v1, networking.k8s.io/v1, policy/v1) against the
  Kubernetes OpenAPI schemas shipped by `kubernetes-validate`, strictly (an
  unknown field is an error), for a pinned Kubernetes version.
- Custom resources (Traefik Middleware, Gateway API HTTPRoute, Envoy Gateway
  SecurityPolicy) against the JSON schemas vendored in deploy/schemas, with
  `check-jsonschema`. A kind with neither is an error.
- Every ConfigMap key `gateway.toml` passes `porteiro check`, with the
  environment its porteiro container would have (every `env:NAME` the config
  names must be set by that container), and its SHA-256 is the
  `checksum/porteiro-config` annotation of the pods that mount it.
- The porteiro container exposes the ports the config listens on, and its
  liveness and readiness probes are /healthz and /readyz on the admin port.

Usage: check_manifests.py [--fix-checksums] [--dir DIR] --porteiro BINARY
"""

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
KUBERNETES_VERSION = "1.34.0"
CORE_API_VERSIONS = {"v1", "apps/v1", "networking.k8s.io/v1", "policy/v1"}
SCHEMAS = {
    ("traefik.io/v1alpha1", "Middleware"): "traefik.io/middleware_v1alpha1.json",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "gateway.networking.k8s.io/httproute_v1.json",
    ("gateway.envoyproxy.io/v1alpha1", "SecurityPolicy"): "gateway.envoyproxy.io/securitypolicy_v1alpha1.json",
}
CHECKSUM = "checksum/porteiro-config"
# Stands in for every secret when `porteiro check` runs: long enough for
# every secret porteiro asks a minimum length of.
PLACEHOLDER = "placeholder-secret-for-porteiro-check-0123456789"

errors = []
sys.stdout.reconfigure(line_buffering=True)


def error(where, message):
    errors.append(f"{where}: {message}")
    print(f"check_manifests: ERROR {where}: {message}", file=sys.stderr)


def load(directory):
    docs = []
    for path in sorted(directory.rglob("*.yaml")):
        try:
            with open(path) as f:
                found = list(yaml.safe_load_all(f))
        except yaml.YAMLError as e:
            error(str(path.relative_to(directory)), f"not YAML: {e}")
            continue
        for i, doc in enumerate(found):
            if not isinstance(doc, dict):
                if doc is not None:
                    error(f"{path.relative_to(directory)} [{i}]", "not a Kubernetes object")
                continue
            name = doc.get("metadata", {}).get("name", "?")
            docs.append((f"{path.relative_to(directory)} [{i}] {doc.get('kind')}/{name}", path, doc))
    return docs


def validate_kinds(docs, tmp):
    core, custom = [], {}
    for where, _path, doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        slug = re.sub(r"[^A-Za-z0-9]+", "_", where)
        if key[0] in CORE_API_VERSIONS:
            out = tmp / f"core_{slug}.yaml"
            out.write_text(yaml.safe_dump(doc))
            core.append((where, out))
        elif key in SCHEMAS:
            out = tmp / f"crd_{slug}.json"
            out.write_text(json.dumps(doc))
            custom.setdefault(SCHEMAS[key], []).append((where, out))
        else:
            error(where, f"no schema for {key[0]} {key[1]}: add its JSON schema to deploy/schemas and to SCHEMAS")
    # One run per tool: each error line names the temp file, which is named
    # after the object.
    if core:
        r = subprocess.run(
            ["kubernetes-validate", "--strict", "--quiet", "-k", KUBERNETES_VERSION, *(str(o) for _w, o in core)],
            capture_output=True, text=True,
        )
        if r.returncode != 0:
            error("core kinds", f"kubernetes-validate {KUBERNETES_VERSION}:\n{(r.stdout + r.stderr).strip()}")
    for schema, items in custom.items():
        r = subprocess.run(
            ["check-jsonschema", "--schemafile", str(HERE / "schemas" / schema), *(str(o) for _w, o in items)],
            capture_output=True, text=True,
        )
        if r.returncode != 0:
            error(schema, f"check-jsonschema:\n{(r.stdout + r.stderr).strip()}")
    print(f"check_manifests: {len(core)} core objects (Kubernetes {KUBERNETES_VERSION}), "
          f"{sum(len(v) for v in custom.values())} custom resources checked")


def port_number(container, port):
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p.get("containerPort")
    return None


def container_env(container, secrets, where):
    """The environment the container gets: names to values, with a
    placeholder for each secret and Kubernetes' $(VAR) expansion applied."""
    env = {}
    for ref in container.get("envFrom", []):
        name = ref.get("secretRef", {}).get("name")
        if name is not None:
            if name not in secrets:
                error(where, f"envFrom names Secret {name}, which is not in the manifests")
            for key in secrets.get(name, {}):
                env[key] = PLACEHOLDER
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), e["value"])
        elif "secretKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["secretKeyRef"]
            if ref["key"] not in secrets.get(ref["name"], {}):
                error(where, f"env {e['name']} reads key {ref['key']} of Secret {ref['name']}, which does not have it")
            env[e["name"]] = PLACEHOLDER
        else:
            env[e["name"]] = PLACEHOLDER
    return env


def check_configs(docs, porteiro, tmp, fix):
    by_dir = {}
    for where, path, doc in docs:
        by_dir.setdefault(path.parent, []).append((where, path, doc))
    configs = 0
    for _dir, items in by_dir.items():
        secrets = {}
        maps = {}
        for where, path, doc in items:
            if doc.get("kind") == "Secret":
                secrets[doc["metadata"]["name"]] = {**doc.get("stringData", {}), **doc.get("data", {})}
            if doc.get("kind") == "ConfigMap" and "gateway.toml" in doc.get("data", {}):
                maps[doc["metadata"]["name"]] = (where, doc["data"]["gateway.toml"])
        used = set()
        for where, path, doc in items:
            if doc.get("kind") not in ("Deployment", "StatefulSet", "DaemonSet"):
                continue
            pod = doc["spec"]["template"]
            volumes = {v["name"]: v["configMap"]["name"] for v in pod["spec"].get("volumes", []) if "configMap" in v}
            for c in pod["spec"]["containers"]:
                mounted = [volumes[m["name"]] for m in c.get("volumeMounts", []) if volumes.get(m["name"]) in maps]
                for cm in mounted:
                    used.add(cm)
                    configs += 1
                    cm_where, text = maps[cm]
                    check_one(f"{where} container {c['name']}", path, doc, c, cm_where, text, secrets, porteiro, tmp, fix)
        for cm, (cm_where, _text) in maps.items():
            if cm not in used:
                error(cm_where, "no Deployment mounts this gateway.toml, so nothing checks it")
    print(f"check_manifests: {configs} gateway.toml checked with porteiro check")


def check_one(where, path, deployment, container, cm_where, text, secrets, porteiro, tmp, fix):
    config = tmp / f"gateway-{len(list(tmp.iterdir()))}.toml"
    config.write_text(text)
    names = sorted(set(re.findall(r'"env:([A-Za-z_][A-Za-z0-9_]*)"', text)))
    env = container_env(container, secrets, where)
    for n in names:
        if n not in env:
            error(where, f"{cm_where}'s gateway.toml reads env:{n}, which the container does not set")
    run_env = {k: v for k, v in os.environ.items() if k not in ("PORTEIRO_CONFIG", "RUST_LOG")}
    run_env.update(env)
    r = subprocess.run([porteiro, "check", "--config", str(config)], capture_output=True, text=True, env=run_env)
    if r.returncode != 0:
        error(cm_where, f"porteiro check: {r.stderr.strip().replace(str(config), 'gateway.toml')}")
        return
    # The listeners the config names are the container's ports, and the
    # probes ask the admin listener.
    server = tomllib.loads(text).get("server", {})
    listen = int(server.get("listen", ":0").rsplit(":", 1)[1])
    admin = server.get("admin_listen")
    ports = {p.get("containerPort") for p in container.get("ports", [])}
    if listen not in ports:
        error(where, f"server.listen port {listen} is not a container port")
    if admin is None:
        error(cm_where, "no server.admin_listen: the probes need /healthz and /readyz")
    else:
        admin_port = int(admin.rsplit(":", 1)[1])
        if admin_port not in ports:
            error(where, f"server.admin_listen port {admin_port} is not a container port")
        for probe, want in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = container.get(probe, {}).get("httpGet", {})
            if get.get("path") != want or port_number(container, get.get("port")) != admin_port:
                error(where, f"{probe} must be GET {want} on the admin port {admin_port}")
    # The checksum annotation that rolls the pods when the config changes.
    digest = hashlib.sha256(text.encode()).hexdigest()
    annotations = deployment["spec"]["template"]["metadata"].setdefault("annotations", {})
    if annotations.get(CHECKSUM) != digest:
        if fix:
            source = path.read_text()
            old = annotations.get(CHECKSUM)
            if old is None or source.count(old) != 1:
                error(where, f"cannot fix {CHECKSUM}: add it to the pod template by hand: {digest}")
                return
            path.write_text(source.replace(old, digest))
            print(f"check_manifests: {path}: {CHECKSUM} set to {digest}")
        else:
            error(where, f"pod annotation {CHECKSUM} is {annotations.get(CHECKSUM)!r}, the config's SHA-256 is {digest} "
                         "(deploy/check_manifests.py --fix-checksums updates it)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=HERE / "kubernetes")
    parser.add_argument("--porteiro", required=True)
    parser.add_argument("--fix-checksums", action="store_true")
    args = parser.parse_args()
    docs = load(args.dir)
    if not docs:
        error(str(args.dir), "no manifests found")
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        (tmp / "configs").mkdir()
        validate_kinds(docs, tmp)
        check_configs(docs, args.porteiro, tmp / "configs", args.fix_checksums)
    if errors:
        print(f"check_manifests: FAILED with {len(errors)} error(s)", file=sys.stderr)
        sys.exit(1)
    print("check_manifests: ok")


if __name__ == "__main__":
    main()
