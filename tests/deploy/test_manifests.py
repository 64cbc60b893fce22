"""deploy/: the images and the Kubernetes manifests agree with Kubernetes, with KubeRay, with the code they
run, with each other and with deploy/README.md, expose nothing outside the cluster and commit no secret.

Offline and quick: no cluster, no container daemon. Core objects are checked against the OpenAPI schemas
that ``kubernetes-validate`` ships (strict: unknown fields fail); KubeRay's RayCluster and RayJob, whose
CRDs that package lacks, are checked field by field, and their pod templates against Kubernetes' own
PodTemplate schema. Servers that really start (two Ray nodes, MLflow with basic auth) are the
``pytest -m deploy`` tests in tests/study.
"""

from __future__ import annotations

import configparser
import copy
import functools
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
README = DEPLOY / "README.md"
EXAMPLE_SECRETS = K8S / "secrets.example.yaml"
NAMESPACE = "resnet-study"
KUBERNETES_VERSION = "1.34"
"""Schemas the core objects must satisfy: a version managed clusters run today; the manifests use only
stable APIs (v1, apps/v1, networking.k8s.io/v1), which later versions keep."""
PLACEHOLDER = "CHANGE-ME"
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|KEY", re.IGNORECASE)
PUBLIC_KINDS = {"Ingress", "IngressClass", "Route", "Gateway", "HTTPRoute", "GRPCRoute", "TCPRoute", "TLSRoute",
                "IngressRoute", "VirtualService"}


YAML_FILES = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


# ----------------------------------------------------------------------------------------------- reading
@functools.cache
def _documents() -> tuple[tuple[Path, dict[str, Any]], ...]:
    """Every YAML document under deploy/, with its file."""
    found = []
    for path in YAML_FILES:
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document is not None:
                found.append((path, document))
    return tuple(found)


def _applied() -> list[dict[str, Any]]:
    """The objects `kubectl apply` creates: all but the Secret templates."""
    return [doc for path, doc in _documents() if path != EXAMPLE_SECRETS]


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [doc for doc in _applied() if doc["kind"] == kind and name in (None, doc["metadata"]["name"])]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def _by_label(kind: str, label: str) -> dict[str, Any]:
    matches = [doc for doc in _applied() if doc["kind"] == kind
               and doc["metadata"].get("labels", {}).get("app.kubernetes.io/name") == label]
    assert len(matches) == 1, f"expected one {kind} labelled {label}, found {len(matches)}"
    return matches[0]


def _is_core(document: dict[str, Any]) -> bool:
    return not document["apiVersion"].startswith("ray.io/")


def _ray_pod_templates() -> dict[str, dict[str, Any]]:
    """The pod templates inside the RayCluster (head, each worker group) and the RayJob (submitter)."""
    cluster, job = _one("RayCluster")["spec"], _one("RayJob")["spec"]
    templates = {"head": cluster["headGroupSpec"]["template"]}
    templates.update({f"worker group {group['groupName']}": group["template"] for group in cluster["workerGroupSpecs"]})
    templates["submitter"] = job["submitterPodTemplate"]
    return templates


def _pod_specs() -> dict[str, dict[str, Any]]:
    specs = {f"{doc['kind']} {doc['metadata']['name']}": doc["spec"]["template"]["spec"]
             for doc in _applied() if doc["kind"] in ("Deployment", "StatefulSet")}
    specs.update({name: template["spec"] for name, template in _ray_pod_templates().items()})
    return specs


def _containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def _secret_ref(entry: dict[str, Any]) -> tuple[str, str] | None:
    ref = entry.get("valueFrom", {}).get("secretKeyRef")
    return (ref["name"], ref["key"]) if ref else None


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def _ray_containers() -> dict[str, dict[str, Any]]:
    """Every container that runs Ray: head, workers, the submitter, and the autoscaler KubeRay adds."""
    containers = {name: template["spec"]["containers"][0] for name, template in _ray_pod_templates().items()}
    containers["autoscaler"] = _one("RayCluster")["spec"]["autoscalerOptions"]
    return containers


def _dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", joined, re.M)]


def _build_args(path: Path) -> dict[str, str]:
    return dict(arg.split("=", 1) for instruction, arg in _dockerfile(path) if instruction == "ARG" and "=" in arg)


def _argv(command: str) -> list[str]:
    return shlex.split(command, comments=True)


def _readme_commands() -> list[str]:
    """The README's indented command lines, continuation lines joined."""
    code = "\n".join(line[4:] for line in README.read_text(encoding="utf-8").splitlines() if line.startswith("    "))
    return [line.strip() for line in re.sub(r"\\\n\s*", " ", code).splitlines() if line.strip()]


def _readme_image(dockerfile: str) -> str:
    builds = [_argv(command) for command in _readme_commands() if command.startswith("docker build")]
    tags = [argv[argv.index("-t") + 1] for argv in builds if argv[argv.index("-f") + 1] == dockerfile]
    assert len(tags) == 1, f"deploy/README.md should build {dockerfile} once, found {tags}"
    return tags[0]


def _entrypoint() -> list[str]:
    return shlex.split(_one("RayJob")["spec"]["entrypoint"])


def _study_args() -> Any:
    from study.run import build_parser

    argv = _entrypoint()
    assert argv[:2] == ["python", "study/run.py"], argv
    return build_parser().parse_args(argv[2:])


def _study_spec() -> Any:
    from study.spec import load_spec

    args = _study_args()
    return load_spec(REPO / args.spec, args.set)


def _mlflow_args() -> dict[str, str | bool]:
    container = _one("Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["mlflow", "server"]
    parsed: dict[str, str | bool] = {}
    for arg in container["args"]:
        key, sep, value = arg.partition("=")
        parsed[key] = value if sep else True
    return parsed


def _postgres_env() -> dict[str, dict[str, Any]]:
    return _env(_one("StatefulSet", "postgres")["spec"]["template"]["spec"]["containers"][0])


def _service_port(service: dict[str, Any]) -> int:
    (port,) = service["spec"]["ports"]
    return int(port["port"])


def _container_port(container: dict[str, Any], name: str) -> int:
    return next(int(p["containerPort"]) for p in container["ports"] if p["name"] == name)


# ------------------------------------------------------------------------------------ Kubernetes schemas
def test_every_yaml_file_under_deploy_holds_kubernetes_objects_of_one_namespace() -> None:
    documents = _documents()
    assert len({path for path, _ in documents}) >= 8
    for path, doc in documents:
        where = f"{path.relative_to(REPO)}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), where
        assert doc["metadata"].get("namespace", doc["metadata"]["name"]) == NAMESPACE, where
    assert _one("Namespace")["metadata"]["name"] == NAMESPACE
    kinds = {doc["kind"] for _, doc in documents}
    assert {"Namespace", "Secret", "PersistentVolumeClaim", "ConfigMap", "Service", "StatefulSet", "Deployment",
            "NetworkPolicy", "RayCluster", "RayJob"} <= kinds


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda path: str(path.relative_to(DEPLOY)))
def test_yaml_file_parses_and_its_core_objects_validate_against_the_kubernetes_schema(path: Path) -> None:
    documents = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]
    assert documents
    for document in filter(_is_core, documents):
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(part) for part in error.path)
            pytest.fail(f"{document['kind']} {document['metadata']['name']}: {where}: {error.message}")


@pytest.mark.parametrize("name", ["head", "worker group gpu", "submitter"])
def test_pod_template_inside_the_ray_resources_validates_as_a_kubernetes_pod_template(name: str) -> None:
    template = _ray_pod_templates()[name]
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "ray"},
                                  "template": template}, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_rejects_a_misspelt_field() -> None:
    deployment = copy.deepcopy(_one("Deployment", "mlflow"))
    deployment["spec"]["template"]["spec"]["containers"][0]["envv"] = []
    with pytest.raises(kubernetes_validate.ValidationError, match="envv"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


# ------------------------------------------------------------------------------------------------ KubeRay
def test_raycluster_has_a_head_and_an_autoscaling_gpu_worker_group() -> None:
    cluster = _one("RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0" and head["template"]["spec"]["containers"]
    assert spec["workerGroupSpecs"]
    for group in spec["workerGroupSpecs"]:
        assert {"groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"} <= group.keys()
        assert 0 <= group["minReplicas"] <= group.get("replicas", group["minReplicas"]) <= group["maxReplicas"]
        assert group["maxReplicas"] >= 1
        (container,) = group["template"]["spec"]["containers"]
        gpus = int(group["rayStartParams"]["num-gpus"])
        assert gpus >= 1
        resources = container["resources"]
        assert int(resources["limits"]["nvidia.com/gpu"]) == gpus, "Ray would count other GPUs than the pod's"
        assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"]
    for params in [head["rayStartParams"], *(g["rayStartParams"] for g in spec["workerGroupSpecs"])]:
        assert all(isinstance(value, str) for value in params.values()), f"KubeRay takes strings only: {params}"


def test_raycluster_ray_version_is_the_images_and_supports_token_auth() -> None:
    ray_version = _build_args(DEPLOY / "Dockerfile")["RAY_VERSION"]
    assert _one("RayCluster")["spec"]["rayVersion"] == ray_version
    assert Version(ray_version) >= Version("2.52.0"), "Ray token authentication needs 2.52"
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    ray_requirement = next(Requirement(r) for r in pyproject["project"]["dependencies"] if Requirement(r).name == "ray")
    assert ray_requirement.specifier.contains(ray_version), f"pyproject asks {ray_requirement}"


def test_ray_token_authentication_is_on_in_every_ray_process() -> None:
    auth = _one("RayCluster")["spec"]["authOptions"]
    assert auth["mode"] == "token"
    for name, container in _ray_containers().items():
        env = _env(container)
        assert env["RAY_AUTH_MODE"].get("value") == "token", name
        assert _secret_ref(env["RAY_AUTH_TOKEN"]) == (auth["secretName"], "auth_token"), name


def test_ray_pods_run_the_image_the_readme_builds_and_mlflow_its_own() -> None:
    study_image = _readme_image("deploy/Dockerfile")
    for name, template in _ray_pod_templates().items():
        assert [c["image"] for c in template["spec"]["containers"]] == [study_image], name
    mlflow_image = _readme_image("deploy/mlflow.Dockerfile")
    mlflow_pod = _one("Deployment", "mlflow")["spec"]["template"]["spec"]
    assert [c["image"] for c in _containers(mlflow_pod)] == [mlflow_image] * 2
    assert mlflow_image.rsplit(":", 1)[1] == _build_args(DEPLOY / "mlflow.Dockerfile")["MLFLOW_VERSION"]
    pushed = {_argv(c)[2] for c in _readme_commands() if c.startswith("docker push")}
    assert pushed == {study_image, mlflow_image}


# ------------------------------------------------------------------------------------------------- study
def test_rayjob_runs_the_study_on_the_raycluster_from_the_images_copy_of_the_repository() -> None:
    job, cluster = _one("RayJob"), _one("RayCluster")
    assert job["apiVersion"] == "ray.io/v1"
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    assert job["spec"].get("shutdownAfterJobFinishes", False) is False, "the cluster is not the job's to delete"
    args = _study_args()
    assert (REPO / "study/run.py").is_file() and args.spec and (REPO / args.spec).is_file()
    workdir = [arg for instruction, arg in _dockerfile(DEPLOY / "Dockerfile") if instruction == "WORKDIR"][-1]
    assert yaml.safe_load(job["spec"]["runtimeEnvYAML"]) == {"working_dir": workdir}
    copied = [arg.split() for instruction, arg in _dockerfile(DEPLOY / "Dockerfile") if instruction == "COPY"]
    assert ["study", "./study"] in copied and ["resnet_core", "./resnet_core"] in copied


def test_rayjob_set_values_load_through_the_study_spec() -> None:
    spec = _study_spec()
    keys = {text.partition("=")[0] for text in _study_args().set}
    assert {"dataset.path", "storage", "mlflow.tracking_uri", "resources.max_concurrent_trials"} <= keys
    assert spec.name == "cifar10_depth"
    assert spec.resources.gpus_per_worker > 0 and spec.train.device in ("auto", "cuda")


def test_the_study_writes_only_to_the_volume_every_ray_pod_shares() -> None:
    spec = _study_spec()
    mounts = {}
    for name, template in _ray_pod_templates().items():
        if name == "submitter":
            continue
        pod = template["spec"]
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
                  for v in pod.get("volumes", []) if "persistentVolumeClaim" in v}
        mounts[name] = frozenset((claims[m["name"]], m["mountPath"])
                                 for m in pod["containers"][0].get("volumeMounts", []) if m["name"] in claims)
    assert len(set(mounts.values())) == 1, f"head and workers must mount the same volume: {mounts}"
    ((claim, mount_path),) = mounts["head"]
    assert "ReadWriteMany" in _one("PersistentVolumeClaim", claim)["spec"]["accessModes"]
    scratch = Path("/nonexistent-working-directory")
    for path in (spec.dataset.path, spec.storage_path(scratch)):
        assert Path(path).is_absolute() and Path(path).is_relative_to(mount_path), path


def test_max_concurrent_trials_fills_the_cluster_at_its_full_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """The study sizes concurrency from the cluster it sees at the start (the head alone, before the autoscaler
    adds workers): the RayJob must give what the full cluster holds, computed the way the study computes it."""
    import dataclasses

    import ray

    from study.runner import concurrent_trials

    spec = _study_spec()
    cpus = gpus = 0.0
    cluster = _one("RayCluster")["spec"]
    cpus += float(cluster["headGroupSpec"]["rayStartParams"]["num-cpus"])
    for group in cluster["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        cpus += group["maxReplicas"] * float(group["rayStartParams"].get("num-cpus", limits["cpu"]))
        gpus += group["maxReplicas"] * float(group["rayStartParams"]["num-gpus"])
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": cpus, "GPU": gpus})
    unset = dataclasses.replace(spec, resources=dataclasses.replace(spec.resources, max_concurrent_trials=0))
    assert spec.resources.max_concurrent_trials == concurrent_trials(unset) > 1


def test_tracking_uri_is_the_mlflow_service_and_the_server_accepts_its_host_header() -> None:
    from mlflow.server.security_utils import is_allowed_host_header

    uri = urlparse(_study_spec().mlflow.tracking_uri)
    service = _one("Service", "mlflow")
    container = _one("Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]
    assert uri.scheme == "http" and uri.hostname == f"mlflow.{NAMESPACE}.svc"
    assert uri.port == _service_port(service) == 5000
    assert _container_port(container, service["spec"]["ports"][0]["targetPort"]) == int(_mlflow_args()["--port"])
    pod_labels = _one("Deployment", "mlflow")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    allowed = str(_mlflow_args()["--allowed-hosts"]).split(",")
    for host in (uri.netloc, "127.0.0.1:5000", "localhost:5000"):  # the job, and a port-forward
        assert is_allowed_host_header(allowed, host), host
    assert not is_allowed_host_header(allowed, "mlflow.example.com")


# ------------------------------------------------------------------------------------------------ MLflow
def test_mlflow_server_runs_basic_auth_on_postgres_with_proxied_s3_artifacts() -> None:
    args = _mlflow_args()
    assert args["--app-name"] == "basic-auth" and args["--serve-artifacts"] is True and args["--host"] == "0.0.0.0"
    store = urlparse(str(args["--backend-store-uri"]))
    postgres = _postgres_env()
    assert store.scheme == "postgresql+psycopg2" and store.password is None, "the password comes from PGPASSWORD"
    assert re.search(r"psycopg2-binary==", (DEPLOY / "mlflow.Dockerfile").read_text()), "the driver the URI names"
    assert store.username == postgres["POSTGRES_USER"]["value"]
    assert store.hostname == f"postgres.{NAMESPACE}.svc" and store.port == _service_port(_one("Service", "postgres"))
    assert store.path == "/" + postgres["POSTGRES_DB"]["value"]
    env = _env(_one("Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0])
    assert _secret_ref(env["PGPASSWORD"]) == _secret_ref(postgres["POSTGRES_PASSWORD"])
    artifacts = urlparse(str(args["--artifacts-destination"]))
    assert artifacts.scheme == "s3"
    (init,) = _one("Deployment", "mlflow")["spec"]["template"]["spec"]["initContainers"]
    assert _env(init)["ARTIFACTS_BUCKET"]["value"] == artifacts.hostname
    assert 'os.environ["ARTIFACTS_BUCKET"]' in init["args"][0]


def test_mlflow_auth_config_keeps_users_in_their_own_postgres_database_and_holds_no_password() -> None:
    pod = _one("Deployment", "mlflow")["spec"]["template"]["spec"]
    env = _env(pod["containers"][0])
    config_path = Path(env["MLFLOW_AUTH_CONFIG_PATH"]["value"])
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if Path(m["mountPath"]) == config_path.parent)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    config_map = _one("ConfigMap", volume["configMap"]["name"])
    ini = configparser.ConfigParser()
    ini.read_string(config_map["data"][config_path.name])
    assert "admin_password" not in ini["mlflow"], "the admin comes from the mlflow-admin Secret"
    users = urlparse(ini["mlflow"]["database_uri"])
    store = urlparse(str(_mlflow_args()["--backend-store-uri"]))
    assert users.scheme == store.scheme and users.password is None
    assert (users.username, users.hostname, users.port) == (store.username, store.hostname, store.port)
    assert users.path != store.path, "users and runs in separate databases"
    init_sql = "\n".join(_one("ConfigMap", "postgres-init")["data"].values())
    assert re.search(rf"CREATE DATABASE {users.path.lstrip('/')}\b", init_sql)
    assert {"MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"} <= env.keys()


def test_minio_root_account_is_the_key_pair_mlflow_uses() -> None:
    minio = _env(_one("StatefulSet", "minio")["spec"]["template"]["spec"]["containers"][0])
    mlflow_env = _env(_one("Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0])
    assert _secret_ref(minio["MINIO_ROOT_USER"]) == _secret_ref(mlflow_env["AWS_ACCESS_KEY_ID"])
    assert _secret_ref(minio["MINIO_ROOT_PASSWORD"]) == _secret_ref(mlflow_env["AWS_SECRET_ACCESS_KEY"])
    example = {doc["metadata"]["name"]: doc["stringData"] for doc in yaml.safe_load_all(EXAMPLE_SECRETS.read_text())}
    name, key = _secret_ref(mlflow_env["MLFLOW_S3_ENDPOINT_URL"])
    endpoint = urlparse(example[name][key])
    assert endpoint.hostname == f"minio.{NAMESPACE}.svc" and endpoint.port == _service_port(_one("Service", "minio"))


# ---------------------------------------------------------------------------------------- env and secrets
READERS = {
    "RAY_AUTH_MODE": "Ray", "RAY_AUTH_TOKEN": "Ray",
    "MLFLOW_TRACKING_USERNAME": "MLflow client", "MLFLOW_TRACKING_PASSWORD": "MLflow client",
    "MLFLOW_S3_ENDPOINT_URL": "MLflow S3 artifacts", "MLFLOW_AUTH_CONFIG_PATH": "MLflow basic-auth",
    "MLFLOW_AUTH_ADMIN_USERNAME": "MLflow basic-auth", "MLFLOW_AUTH_ADMIN_PASSWORD": "MLflow basic-auth",
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "MLflow basic-auth", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "MLflow server",
    "AWS_ACCESS_KEY_ID": "boto3", "AWS_SECRET_ACCESS_KEY": "boto3",
    "PGPASSWORD": "libpq (psycopg2)",
    "POSTGRES_USER": "postgres image", "POSTGRES_DB": "postgres image", "POSTGRES_PASSWORD": "postgres image",
    "PGDATA": "postgres image",
    "MINIO_ROOT_USER": "minio", "MINIO_ROOT_PASSWORD": "minio", "MINIO_BROWSER": "minio",
    "ARTIFACTS_BUCKET": "the MLflow pod's ensure-bucket script",
}
"""Every variable a manifest sets, and who reads it; MLflow's and Ray's names are checked in their code."""


def test_env_vars_are_ones_their_readers_know() -> None:
    import mlflow.environment_variables as mlflow_env
    import ray

    containers = [c for pod in _pod_specs().values() for c in _containers(pod)] + [_ray_containers()["autoscaler"]]
    names = {name for container in containers for name in _env(container)}
    assert names <= READERS.keys(), f"unknown variables: {sorted(names - READERS.keys())}"
    ray_sources = "\n".join(p.read_text(encoding="utf-8", errors="ignore")
                            for p in Path(ray.__file__).parent.glob("_private/authentication/*.py"))
    ray_sources += Path(ray.__file__).with_name("exceptions.py").read_text(encoding="utf-8")
    for name in names:
        if name.startswith("MLFLOW_"):
            assert getattr(mlflow_env, name).name == name, name
        elif name.startswith("RAY_"):
            assert name in ray_sources, f"{name} is not a variable Ray reads"


def test_each_pod_gets_only_the_credentials_it_uses() -> None:
    def secrets_of(pod: dict[str, Any]) -> set[str]:
        return {name for c in _containers(pod) for name, entry in _env(c).items() if _secret_ref(entry)}

    pods = _pod_specs()
    assert {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} <= secrets_of(pods["head"])
    assert secrets_of(pods["worker group gpu"]) == secrets_of(pods["submitter"]) == {"RAY_AUTH_TOKEN"}
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL", "PGPASSWORD"} <= \
        secrets_of(pods["Deployment mlflow"])
    store_credentials = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PGPASSWORD"}
    assert {name for name, pod in pods.items() if store_credentials & secrets_of(pod)} == {"Deployment mlflow"}


def test_every_secret_the_pods_read_is_declared_in_the_example_and_created_in_the_readme() -> None:
    referenced = {ref for doc in _applied() for node in _walk(doc)
                  if node.get("secretKeyRef") for ref in [(node["secretKeyRef"]["name"], node["secretKeyRef"]["key"])]}
    referenced.add((_one("RayCluster")["spec"]["authOptions"]["secretName"], "auth_token"))
    declared = {(doc["metadata"]["name"], key) for doc in yaml.safe_load_all(EXAMPLE_SECRETS.read_text())
                for key in doc["stringData"]}
    assert referenced == declared
    created = set()
    for command in _readme_commands():
        argv = _argv(command)
        if argv[:2] == ["kubectl", "-n"] and argv[3:6] == ["create", "secret", "generic"]:
            assert argv[2] == NAMESPACE
            created |= {(argv[6], arg.split("=", 2)[1]) for arg in argv if arg.startswith("--from-literal=")}
    assert created == declared


def test_no_secret_value_is_committed() -> None:
    for doc in _applied():
        assert doc["kind"] != "Secret", "Secrets are created by hand, never applied from the repository"
        for node in _walk(doc):
            if "name" in node and "value" in node and SECRET_NAME.search(str(node["name"])):
                pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: {node['name']} has a literal value")
    for doc in yaml.safe_load_all(EXAMPLE_SECRETS.read_text()):
        assert "data" not in doc
        for key, value in doc["stringData"].items():
            assert value == PLACEHOLDER or not SECRET_NAME.search(key), f"{doc['metadata']['name']}.{key}"
    credentials = [re.compile(p) for p in (r"AKIA[0-9A-Z]{16}", r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
                                             r"://[^/\s:@'\"]+:[^/\s@'\"]+@", r"\b[0-9a-f]{32,}\b",
                                             r"\b[A-Za-z0-9+/]{40,}={0,2}")]
    for path in [*DEPLOY.rglob("*"), REPO / ".dockerignore"]:
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            for pattern in credentials:
                assert not pattern.search(text), f"{path.relative_to(REPO)}: {pattern.pattern}"


# -------------------------------------------------------------------------------------------- exposure
def test_nothing_is_reachable_from_outside_the_cluster() -> None:
    for path, doc in _documents():
        assert doc["kind"] not in PUBLIC_KINDS, f"{path.name}: {doc['kind']}"
        if doc["kind"] == "Service":
            assert doc["spec"].get("type", "ClusterIP") == "ClusterIP", doc["metadata"]["name"]
    for name, pod in _pod_specs().items():
        assert not pod.get("hostNetwork"), name
        for container in _containers(pod):
            assert all("hostPort" not in port for port in container.get("ports", [])), name
    head = _one("RayCluster")["spec"]["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP" and not head.get("enableIngress")
    # The dashboard binds to all interfaces of the head pod only because the ClusterIP Service is the way in.
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    forwards = [_argv(c) for c in _readme_commands() if " port-forward " in c]
    assert forwards and all("--address" not in argv for argv in forwards), "port-forwards stay on 127.0.0.1"


def test_readme_port_forwards_reach_existing_services() -> None:
    cluster = _one("RayCluster")
    services = {doc["metadata"]["name"]: _service_port(doc) for doc in _applied() if doc["kind"] == "Service"}
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    services[f"{cluster['metadata']['name']}-head-svc"] = _container_port(head, "dashboard")  # KubeRay's
    for argv in (_argv(c) for c in _readme_commands() if " port-forward " in c):
        service = argv[argv.index("port-forward") + 1].removeprefix("svc/")
        _local, remote = argv[argv.index("port-forward") + 2].split(":")
        assert services.get(service) == int(remote), " ".join(argv)


def test_network_policies_guard_mlflow_its_stores_and_the_ray_pods() -> None:
    policies = {doc["metadata"]["name"]: doc["spec"] for doc in _applied() if doc["kind"] == "NetworkPolicy"}

    def guarding(labels: dict[str, str]) -> dict[str, Any]:
        (spec,) = [s for s in policies.values() if s["podSelector"]["matchLabels"].items() <= labels.items()]
        assert "Ingress" in spec["policyTypes"]
        return spec

    ray_pods = {"ray.io/cluster": _one("RayCluster")["metadata"]["name"]}
    for store, port, client in (("mlflow", 5000, ray_pods), ("postgres", 5432, {"app.kubernetes.io/name": "mlflow"}),
                                ("minio", 9000, {"app.kubernetes.io/name": "mlflow"})):
        workload = _by_label("Deployment" if store == "mlflow" else "StatefulSet", store)
        (rule,) = guarding(workload["spec"]["template"]["metadata"]["labels"])["ingress"]
        assert [peer["podSelector"]["matchLabels"] for peer in rule["from"]] == [client], store
        assert [p["port"] for p in rule["ports"]] == [port] == [_service_port(_one("Service", store))], store
    ray_rules = guarding(ray_pods)["ingress"]
    submitter = _ray_pod_templates()["submitter"]["metadata"]["labels"]
    dashboard_peers = [peer for rule in ray_rules if [p["port"] for p in rule.get("ports", [])] == [8265]
                       for peer in rule["from"]]
    assert any(peer.get("podSelector", {}).get("matchLabels", {}).items() <= submitter.items()
               for peer in dashboard_peers if "podSelector" in peer)


# ------------------------------------------------------------------------------------------------ images
def test_study_dockerfile_installs_the_project_on_a_cuda_pytorch_image_as_non_root() -> None:
    path = DEPLOY / "Dockerfile"
    instructions = _dockerfile(path)
    base = _build_args(path)["BASE_IMAGE"]
    assert [arg for instruction, arg in instructions if instruction == "FROM"] == ["${BASE_IMAGE}"]
    match = re.fullmatch(r"pytorch/pytorch:(\d+\.\d+\.\d+)-cuda[\d.]+-cudnn\d+-runtime", base)
    assert match, base
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    torch = next(Requirement(r) for r in pyproject["project"]["dependencies"] if Requirement(r).name == "torch")
    assert torch.specifier.contains(match.group(1)), f"{base} does not satisfy {torch}"
    runs = " ".join(arg for instruction, arg in instructions if instruction == "RUN")
    assert re.search(r"pip install [^&]*\s\.(\s|$)", runs), "the project is installed with pip install ."
    _assert_no_secret_and_non_root(path)


def test_mlflow_dockerfile_pins_mlflow_with_postgres_and_s3_clients_as_non_root() -> None:
    path = DEPLOY / "mlflow.Dockerfile"
    runs = " ".join(arg for instruction, arg in _dockerfile(path) if instruction == "RUN")
    assert '"mlflow[auth]==${MLFLOW_VERSION}"' in runs
    assert re.search(r"psycopg2-binary==\S+", runs) and re.search(r"boto3==\S+", runs)
    _assert_no_secret_and_non_root(path)


def _assert_no_secret_and_non_root(path: Path) -> None:
    instructions = _dockerfile(path)
    for instruction, arg in instructions:
        if instruction in ("ENV", "ARG"):
            names = re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", arg) or [arg.split()[0]]
            assert not any(SECRET_NAME.search(name) for name in names), f"{path.name}: {instruction} {arg}"
        if instruction in ("COPY", "ADD"):
            assert not re.search(r"\.env\b|auth_token|\.pem|\.key\b|secret|credential|\.aws|\.ray\b|id_rsa", arg,
                                 re.IGNORECASE), f"{path.name}: {instruction} {arg}"
    users = [arg for instruction, arg in instructions if instruction == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), f"{path.name} must end as a non-root user"


def test_dockerignore_keeps_environments_data_and_results_out_of_the_build_context() -> None:
    ignored = set((REPO / ".dockerignore").read_text(encoding="utf-8").split())
    assert {".venv", ".git", "data", "runs", "mlruns", "mlflow.db", "ray_results", "benchmarks/results"} <= ignored


def test_readme_applies_every_manifest_in_order_and_never_the_secret_template() -> None:
    applied = [_argv(c)[-1] for c in _readme_commands() if c.startswith("kubectl apply -f")]
    manifests = sorted(str(p.relative_to(REPO)) for p in K8S.glob("*.yaml") if p != EXAMPLE_SECRETS)
    assert applied == manifests
