#!/usr/bin/env python3
"""Checks Kubernetes manifests' field names against the API's own models, and prints
them as JSON for the test that compares them with sluice's defaults.

    kubectl kustomize dist/kubernetes | scripts/k8s-check.py KUBERNETES_WHEEL

KUBERNETES_WHEEL is the `kubernetes` Python client's wheel from PyPI (scripts/test.sh
downloads it): its models, generated from the Kubernetes OpenAPI schema, list every
field of every kind (`attribute_map`) with its type (`openapi_types`). They are read
from the wheel as text (nothing of it is imported or installed). Every key of every
document is looked up the same way the API server would decode it; an unknown one is
an error naming its path. Exit 1 on any.
"""

import ast
import json
import re
import sys
import zipfile

import yaml


def load_models(wheel):
    """{class name: {json key: type}} from the wheel's model sources."""
    models = {}
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if not re.match(r"kubernetes/client/models/v\w+\.py$", name):
                continue
            tree = ast.parse(archive.read(name).decode())
            for node in tree.body:
                if not isinstance(node, ast.ClassDef):
                    continue
                found = {}
                for item in node.body:
                    if isinstance(item, ast.Assign) and len(item.targets) == 1:
                        target = item.targets[0]
                        if isinstance(target, ast.Name) and target.id in ("openapi_types", "attribute_map"):
                            found[target.id] = ast.literal_eval(item.value)
                if "openapi_types" in found and "attribute_map" in found:
                    models[node.name] = {
                        found["attribute_map"][attr]: kind for attr, kind in found["openapi_types"].items()
                    }
    return models


def check(value, kind, path, models, problems):
    """Checks `value` against the type named `kind` (as the models write types)."""
    if kind in ("object", "str", "int", "bool", "float", "datetime", "date"):
        return  # a free-form object (IntOrString, RawExtension) or a scalar
    list_of = re.fullmatch(r"list\[(.+)\]", kind)
    if list_of:
        for i, item in enumerate(value or []):
            check(item, list_of.group(1), f"{path}[{i}]", models, problems)
        return
    dict_of = re.fullmatch(r"dict\(str, (.+)\)", kind)
    if dict_of:
        for key, item in (value or {}).items():
            check(item, dict_of.group(1), f"{path}.{key}", models, problems)
        return
    fields = models.get(kind)
    if fields is None:
        problems.append(f"{path}: no model {kind} in the schema")
        return
    if not isinstance(value, dict):
        problems.append(f"{path}: expected an object ({kind})")
        return
    for key, item in value.items():
        if key not in fields:
            known = ", ".join(sorted(fields))
            problems.append(f"{path}.{key}: not a field of {kind} (known: {known})")
        else:
            check(item, fields[key], f"{path}.{key}", models, problems)


def root_model(document):
    """`apps/v1` + `Deployment` -> V1Deployment; `autoscaling/v2` -> V2...."""
    version = document.get("apiVersion", "").split("/")[-1]
    return version[:1].upper() + version[1:] + document.get("kind", "")


def main():
    models = load_models(sys.argv[1])
    documents = [d for d in yaml.safe_load_all(sys.stdin) if d]
    problems = []
    for document in documents:
        name = f"{document.get('kind')}/{document.get('metadata', {}).get('name')}"
        check(document, root_model(document), name, models, problems)
    for problem in problems:
        print(problem, file=sys.stderr)
    print(json.dumps(documents))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
