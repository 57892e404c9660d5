#!/usr/bin/env bash
# Validates the Kubernetes manifests in config/k8s without a cluster: every
# resource the kustomization lists, the ConfigMaps its configMapGenerator
# makes, and the Gateway API HTTPRoutes those ConfigMaps carry, each against
# the JSON schema vendored for its kind in config/k8s/schemas (see the README
# there). Unknown fields are errors, as with `kubectl apply --validate=strict`.
# Needs python3 with jsonschema and PyYAML: installs Debian's packages when
# they are missing (no prompts). Usage: ./scripts/validate-k8s.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v python3 >/dev/null 2>&1; then
  echo "validate-k8s.sh: python3 is missing: install it (Debian: python3)" >&2
  exit 2
fi

if ! python3 -c 'import jsonschema, yaml' >/dev/null 2>&1; then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "validate-k8s.sh: installing Debian packages python3-jsonschema python3-yaml" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    python3-jsonschema python3-yaml </dev/null
fi

exec python3 - config/k8s <<'PYTHON'
import json
import pathlib
import sys
import warnings

import jsonschema
import yaml

k8s = pathlib.Path(sys.argv[1])
schemas = k8s / "schemas"

# (apiVersion, kind) -> schema file under config/k8s/schemas.
SCHEMAS = {
    ("v1", "Namespace"): "kubernetes/namespace-v1.json",
    ("v1", "Service"): "kubernetes/service-v1.json",
    ("v1", "ConfigMap"): "kubernetes/configmap-v1.json",
    ("apps/v1", "Deployment"): "kubernetes/deployment-apps-v1.json",
    ("policy/v1", "PodDisruptionBudget"): "kubernetes/poddisruptionbudget-policy-v1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor-monitoring.coreos.com-v1.json",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "httproute-gateway.networking.k8s.io-v1.json",
}


def load(path):
    return json.loads((schemas / path).read_text())


definitions = load("kubernetes/_definitions.json")


def validator(schema):
    """A draft 2020-12 validator that finds Kubernetes' shared definitions
    in the vendored file instead of fetching them."""
    cls = jsonschema.Draft202012Validator
    try:
        from referencing import Registry, Resource

        registry = Registry().with_resource(
            definitions["$id"], Resource.from_contents(definitions)
        )
        return cls(schema, registry=registry)
    except ImportError:  # jsonschema before 4.18 (Debian 12)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            resolver = jsonschema.RefResolver.from_schema(
                schema, store={definitions["$id"]: definitions}
            )
        return cls(schema, resolver=resolver)


validators = {key: validator(load(path)) for key, path in SCHEMAS.items()}
failures = 0
checked = 0


def check(document, where):
    global failures, checked
    key = (document.get("apiVersion"), document.get("kind"))
    if key not in validators:
        print(f"{where}: no schema vendored for {key[1]} {key[0]}: add one to "
              f"config/k8s/schemas and to this script")
        failures += 1
        return
    checked += 1
    errors = sorted(validators[key].iter_errors(document), key=lambda e: list(e.path))
    for error in errors:
        path = ".".join(str(p) for p in error.path) or "(top)"
        print(f"{where}: {key[1]} {document.get('metadata', {}).get('name')}: {path}: {error.message}")
    failures += len(errors)


kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
for resource in kustomization.get("resources", []):
    for i, document in enumerate(yaml.safe_load_all((k8s / resource).read_text())):
        if document is not None:
            check(document, f"config/k8s/{resource} (document {i + 1})")

for generator in kustomization.get("configMapGenerator", []):
    data = {}
    for entry in generator.get("files", []):
        key, _, file = entry.partition("=")
        file = file or key
        text = (k8s / file).read_text()
        data[key] = text
        if file.endswith((".yaml", ".yml")):
            for i, document in enumerate(yaml.safe_load_all(text)):
                if document is not None:
                    check(document, f"config/k8s/{file} (document {i + 1})")
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": generator["name"], "namespace": kustomization.get("namespace")},
        "data": data,
    }
    check(config_map, f"config/k8s/kustomization.yaml (configMapGenerator {generator['name']})")

if failures:
    print(f"validate-k8s.sh: {failures} problems in {checked} documents")
    sys.exit(1)
print(f"validate-k8s.sh: {checked} documents valid")
PYTHON
