"""deploy/: the image, compose file, Kubernetes manifests, dashboard and alerts (SPEC §13).

No Docker engine or cluster is needed: every file is parsed and checked against the code it
deploys — config keys and their environment names, ports, paths, shutdown timings, metric
names. The example configuration is also run for real (in process, with the environment the
manifests give it, pointed at local files and ports, its archive at a PostgreSQL that is
not there), and its metrics page is the list of metric names the dashboard and the alerts may
use. With promtool installed, the alerts are also run on made-up series.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sidecar.audit.crypto import BodyCipher, generate_key_line
from sidecar.config import (
    CONFIG_ENV,
    Health,
    Listen,
    Settings,
    load_settings,
)
from sidecar.config.load import _unknown_environment
from sidecar.errors import ConfigError
from sidecar.keys.format import KEY_PATTERN
from sidecar.runtime.serve import Running, running
from sidecar.runtime.tls import check_certificate
from sidecar.storage.embedded import EmbeddedRedis
from tests.upstream import UpstreamServer

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
EXAMPLE_CONFIG = DEPLOY / "sidecar.yaml"
CONFIG_IN_CONTAINER = "/etc/sidecar/sidecar.yaml"

# Metrics the rules may use that the sidecar does not export, each with where it comes from.
EXTERNAL_METRICS = {
    "up": "Prometheus itself, per scrape target",
    "kube_pod_container_status_ready": "kube-state-metrics",
}
# Every family of SPEC §11, each of which the dashboard must show.
SPEC_METRICS = (
    "sidecar_requests_total",
    "sidecar_auth_events_total",
    "sidecar_key_cache_total",
    "sidecar_argon2_verifications_total",
    "sidecar_upstream_duration_seconds",
    "sidecar_request_duration_seconds",
    "sidecar_audit_queue_depth",
    "sidecar_audit_spool_bytes",
    "sidecar_audit_records_total",
    "sidecar_redis_errors_total",
    "sidecar_keys_rotation_due",
)
# The audit archive's (SPEC §15; sidecar/metrics.py), which the dashboard must show too.
ARCHIVE_METRICS = (
    "sidecar_archive_lag_seconds",
    "sidecar_archive_records_total",
    "sidecar_archive_errors_total",
)
# libpq's own environment variables that name files (psycopg reads them): not config keys, but
# secrets all the same when they point at a password.
LIBPQ_FILE_VARIABLES = frozenset({"PGPASSFILE"})
# Where the tests point the deployments' archive: nothing listens on port 1, so every archive
# pass fails at once, as with a PostgreSQL that is down.
ABSENT_ARCHIVE_URL = "postgresql://sidecar@127.0.0.1:1/sidecar"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SIDECAR_… variable from the developer's shell leaks into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("SIDECAR_"):
            monkeypatch.delenv(name)


# --- reading the files -------------------------------------------------------------------


def documents(path: Path) -> list[Any]:
    """Every YAML document in the file (`---` separated), empty ones dropped."""
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def kubernetes_objects() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in documents(path) if "kind" in doc]


def kube(kind: str, name: str) -> dict[str, Any]:
    [found] = [
        doc
        for doc in kubernetes_objects()
        if doc["kind"] == kind and doc["metadata"]["name"] == name
    ]
    return found


def pod_spec(kind: str = "Deployment", name: str = "app") -> dict[str, Any]:
    spec: dict[str, Any] = kube(kind, name)["spec"]["template"]["spec"]
    return spec


def container(name: str, pod: dict[str, Any] | None = None) -> dict[str, Any]:
    [found] = [c for c in (pod or pod_spec())["containers"] if c["name"] == name]
    result: dict[str, Any] = found
    return result


def workloads() -> list[dict[str, Any]]:
    return [doc for doc in kubernetes_objects() if doc["kind"] in ("Deployment", "StatefulSet")]


def k8s_env(name: str = "sidecar", pod: dict[str, Any] | None = None) -> dict[str, str]:
    """The variables whose values the manifest writes out (not those from a Secret)."""
    env = container(name, pod).get("env", [])
    return {item["name"]: str(item["value"]) for item in env if "value" in item}


def k8s_secret_env(name: str = "sidecar", pod: dict[str, Any] | None = None) -> dict[str, str]:
    """The variables a Secret's key fills in, as `secret/key`."""
    env = container(name, pod).get("env", [])
    refs = {item["name"]: item["valueFrom"]["secretKeyRef"] for item in env if "value" not in item}
    return {variable: f"{ref['name']}/{ref['key']}" for variable, ref in refs.items()}


def compose() -> dict[str, Any]:
    [document] = documents(DEPLOY / "compose.yaml")
    result: dict[str, Any] = document
    return result


def compose_env() -> dict[str, str]:
    environment = compose()["services"]["sidecar"]["environment"]
    if isinstance(environment, list):  # the `- NAME=value` form
        return dict(item.split("=", 1) for item in environment)
    return {name: str(value) for name, value in environment.items()}


def example_settings() -> Settings:
    """deploy/sidecar.yaml alone (no environment), as the container reads it."""
    return load_settings(EXAMPLE_CONFIG, complete=False)


def container_port(spec: dict[str, Any], port: int | str) -> int:
    """A port given by number or by the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    [number] = [p["containerPort"] for p in spec.get("ports", []) if p.get("name") == port]
    return int(number)


def sleep_seconds(hook: dict[str, Any]) -> int:
    command = hook["exec"]["command"]
    assert command[0] == "sleep", command
    assert len(command) == 2, command
    return int(command[1])


def compose_seconds(text: str) -> float:
    """A compose duration: `40s`, `1m30s`, `1h`."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?", text)
    assert text, "an empty duration"
    assert parts, f"not a compose duration: {text!r}"
    hours, minutes, seconds, millis = (int(part or 0) for part in parts.groups())
    return hours * 3600 + minutes * 60 + seconds + millis / 1000


# --- the Dockerfile, parsed ------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"no {keyword} in stage {self.name or self.base}"
        return found[-1]


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) with continuations joined and comment lines dropped, as Docker does."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def dockerfile_stages() -> list[Stage]:
    arguments: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, args in dockerfile_instructions((DEPLOY / "Dockerfile").read_text()):
        if keyword == "ARG" and not stages:  # global ARGs: usable in FROM
            name, _, default = args.partition("=")
            arguments[name] = default
        elif keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--platform")]
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: arguments[m[1] or m[2]], words[0])
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, alias))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, args))
    return stages


def exec_form(args: str) -> list[str]:
    assert args.startswith("["), f"use the exec (JSON) form, not the shell form: {args}"
    command: list[str] = json.loads(args)
    return command


def healthcheck_command(stage: Stage) -> list[str]:
    _options, _, command = stage.last("HEALTHCHECK").partition(" CMD ")
    return exec_form(command)


# --- PromQL: the metric names an expression reads --------------------------------------

_PROMQL_WORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf", "nan"}
)


def promql_metrics(expr: str) -> set[str]:
    """The metric names in a PromQL expression: identifiers that are not functions,
    aggregations, keywords, label names or durations. Small, but enough for rule files."""
    assert "#" not in expr, f"a '#' in PromQL starts a comment to the end of the line: {expr}"
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w:.$])[A-Za-z_:][\w:]*", text):
        word = match.group()
        if re.match(r"\s*\(", text[match.end() :]) or word.lower() in _PROMQL_WORDS:
            continue  # a function or aggregation being called, or a keyword
        names.add(word)
    return names


def test_the_promql_reader_finds_metric_names_and_nothing_else() -> None:
    assert promql_metrics(
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{job=~"$job", x="y{z}"}[5m])))'
        " / on (instance) group_left (pod) b_total offset 1h > bool 2 and c > 0.8 * 1e3"
        ' unless max without (pod) (d) or label_replace(e, "f", "$1", "g", "(.*)")'
    ) == {"a_bucket", "b_total", "c", "d", "e"}
    with pytest.raises(AssertionError, match="comment"):
        promql_metrics("a > 1   # tune\nand b > 2")


# --- every file parses -------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def test_the_deploy_tree_has_every_piece() -> None:
    expected = {
        "Dockerfile",
        "compose.yaml",
        "sidecar.yaml",
        "README.md",
        "grafana-dashboard.json",
        "alerts.yaml",
        "kubernetes/deployment.yaml",
        "kubernetes/configmap.yaml",
        "kubernetes/secret.example.yaml",
        "kubernetes/service.yaml",
        "kubernetes/networkpolicy.yaml",
        "kubernetes/redis.yaml",
        "kubernetes/postgres.yaml",
        "kubernetes/kustomization.yaml",
    }
    present = {str(path.relative_to(DEPLOY)) for path in DEPLOY.rglob("*") if path.is_file()}
    assert expected <= present
    assert (ROOT / ".dockerignore").is_file()


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path: Path) -> None:
    docs = documents(path)
    assert docs, "no document"
    assert all(isinstance(doc, dict) for doc in docs), "every document is a mapping"


def test_every_kubernetes_document_is_an_object() -> None:
    for path in sorted(K8S.glob("*.yaml")):
        for doc in documents(path):
            assert {"apiVersion", "kind"} <= doc.keys(), path.name
            if doc["kind"] != "Kustomization":
                assert doc["metadata"]["name"], path.name


def test_kustomization_applies_every_manifest_but_the_secret_placeholders() -> None:
    [kustomization] = documents(K8S / "kustomization.yaml")
    resources = set(kustomization["resources"])
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    # Applying the placeholders would overwrite the operator's real Secrets.
    assert resources == manifests - {"secret.example.yaml"}
    images = {image["name"] for image in kustomization.get("images", [])}
    assert container("sidecar")["image"].split(":")[0] in images


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_the_manifests() -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, check=False, timeout=60
    )
    assert built.returncode == 0, built.stderr
    built_objects = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(built.stdout)}
    expected = {
        (doc["kind"], doc["metadata"]["name"])
        for doc in kubernetes_objects()
        if doc["kind"] not in ("Kustomization", "Secret")
    }
    assert built_objects == expected


# --- one configuration, everywhere -------------------------------------------------------


def test_the_configmap_embeds_deploy_sidecar_yaml_verbatim() -> None:
    config_map = kube("ConfigMap", "sidecar-config")
    assert config_map["data"]["sidecar.yaml"] == EXAMPLE_CONFIG.read_text(encoding="utf-8")


def test_the_container_reads_the_mounted_configuration() -> None:
    final = dockerfile_stages()[-1]
    assert exec_form(final.last("ENTRYPOINT")) == ["sidecar"]
    serve = ["serve", "--config", CONFIG_IN_CONTAINER, "--workers"]
    assert exec_form(final.last("CMD")) == [*serve, "auto"]

    sidecar = container("sidecar")
    assert sidecar["args"] == [*serve, "2"]
    [mount] = [m for m in sidecar["volumeMounts"] if m["name"] == "config"]
    assert mount["readOnly"] is True
    assert Path(mount["mountPath"]) == Path(CONFIG_IN_CONTAINER).parent
    [volume] = [v for v in pod_spec()["volumes"] if v["name"] == "config"]
    config_map = kube("ConfigMap", volume["configMap"]["name"])
    assert Path(CONFIG_IN_CONTAINER).name in config_map["data"]

    mounts = compose()["services"]["sidecar"]["volumes"]
    assert f"./sidecar.yaml:{CONFIG_IN_CONTAINER}:ro" in mounts


def test_the_example_keeps_the_documented_ports_and_shutdown() -> None:
    settings = example_settings()
    # The image's HEALTHCHECK and EXPOSE, and the probes, assume these defaults.
    assert settings.listen.port == Listen().port == 8443
    assert settings.health.port == Health().port == 8081
    assert settings.shutdown.drain_s > 0  # the preStop sleep below is matched to it
    assert settings.default_route == "deny"
    assert (settings.log.format, settings.log.level) == ("json", "info")
    assert [route.path for route in settings.routes] == [
        "/v1/orders/**",
        "/v1/orders/**",
        "/v1/customers",
        "/status",
    ]


# --- environment names --------------------------------------------------------------------

_ENV_NAME = re.compile(r"\bSIDECAR_[A-Z0-9_]*[A-Z0-9]\b")


def env_names_in_deploy() -> dict[str, set[str]]:
    """Every SIDECAR_… name written anywhere under deploy/ (and the root .dockerignore)."""
    found: dict[str, set[str]] = {}
    for path in [*sorted(DEPLOY.rglob("*")), ROOT / ".dockerignore"]:
        if path.is_file():
            for name in _ENV_NAME.findall(path.read_text(encoding="utf-8")):
                found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_sidecar_environment_name_in_deploy_names_a_config_key() -> None:
    found = env_names_in_deploy()
    # The names that must be set somewhere, so the scan cannot pass by finding nothing.
    assert {
        "SIDECAR_UPSTREAM__URL",
        "SIDECAR_REDIS__URL",
        "SIDECAR_TLS__CERT_FILE",
        "SIDECAR_TLS__KEY_FILE",
        "SIDECAR_AUDIT__ENCRYPTION_KEY_FILE",
        "SIDECAR_ARCHIVE__URL",
    } <= found.keys()
    structured = set(compose_env()) | {
        item["name"]
        for doc in kubernetes_objects()
        if doc["kind"] in ("Deployment", "StatefulSet")
        for spec in doc["spec"]["template"]["spec"]["containers"]
        for item in spec.get("env", [])
    }
    for stage in dockerfile_stages():
        for args in stage.all("ENV"):
            structured |= set(_ENV_NAME.findall(args))
    assert {name for name in structured if name.startswith("SIDECAR_")} <= found.keys()

    problems = _unknown_environment(dict.fromkeys(found, "x"))
    assert problems == [], {p: found[p.split(":")[0]] for p in problems}
    # The same check refuses a typo, so the empty list above means something.
    assert _unknown_environment({"SIDECAR_UPSTREAM__ULR": "x"})


def test_the_image_sets_no_config_key_through_env() -> None:
    """An ENV in the image would silently win over the operator's YAML (env beats file).
    Only SIDECAR_CONFIG, the file's path, is set: `sidecar keys …` in the container finds it."""
    final = dockerfile_stages()[-1]
    names = set(_ENV_NAME.findall(" ".join(final.all("ENV"))))
    assert names == {CONFIG_ENV}
    assert f"{CONFIG_ENV}={CONFIG_IN_CONTAINER}" in " ".join(final.all("ENV")).split()


@dataclass
class Runtime:
    """Where each deployment points the sidecar: its environment and what backs each file."""

    env: dict[str, str]  # the values written out in the deployment
    files: dict[str, str]  # env name of a file → the secret (or key) behind that file
    # env name → the Secret's key its value comes from (Kubernetes' secretKeyRef)
    secret_values: dict[str, str] = field(default_factory=dict)


def names_a_file(name: str) -> bool:
    return name.endswith("_FILE") or name in LIBPQ_FILE_VARIABLES


def secret_files(pod: dict[str, Any], name: str) -> dict[str, str]:
    """Each of a container's variables naming a file, as the `secret/key` mounted there."""
    spec = container(name, pod)
    mounts = {m["name"]: m["mountPath"] for m in spec.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    files = {}
    for variable, value in k8s_env(name, pod).items():
        if not names_a_file(variable):
            continue
        [volume_name] = [n for n, mount in mounts.items() if Path(value).parent == Path(mount)]
        assert "secret" in volumes[volume_name], f"{variable}: {value} is not in a Secret"
        files[variable] = f"{volumes[volume_name]['secret']['secretName']}/{Path(value).name}"
    return files


def kubernetes_runtime() -> Runtime:
    return Runtime(k8s_env(), secret_files(pod_spec(), "sidecar"), k8s_secret_env())


def compose_runtime() -> Runtime:
    env = compose_env()
    files = {}
    for name, value in env.items():
        if names_a_file(name):
            assert value.startswith("/run/secrets/"), f"{name} is not a compose secret"
            files[name] = Path(value).name
    return Runtime(env, files)


def example_secrets() -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in documents(K8S / "secret.example.yaml")}


def test_kubernetes_files_come_from_the_secrets_the_example_describes() -> None:
    runtime = kubernetes_runtime()
    secrets = example_secrets()
    assert set(runtime.files) == {
        "SIDECAR_TLS__CERT_FILE",
        "SIDECAR_TLS__KEY_FILE",
        "SIDECAR_AUDIT__ENCRYPTION_KEY_FILE",
    }
    assert runtime.secret_values == {"SIDECAR_ARCHIVE__URL": "sidecar-archive/url"}
    # Every Secret any workload reads, as a file or as a value, has its key in the example.
    used = set()
    for workload in workloads():
        pod = workload["spec"]["template"]["spec"]
        volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
        for spec in pod["containers"]:
            used |= {*secret_files(pod, spec["name"]).values()}
            used |= {*k8s_secret_env(spec["name"], pod).values()}
            for mount in spec.get("volumeMounts", []):
                volume = volumes.get(mount["name"], {})  # none: a claim of the StatefulSet's
                if "secret" in volume or "configMap" in volume:
                    assert mount["readOnly"] is True, f"{spec['name']}: {mount['name']}"
    assert "sidecar-postgres/password" in used  # the archive's server, initialised from it
    for backing in used:
        secret, key = backing.split("/")
        assert key in secrets[secret]["stringData"], backing
    assert {backing.split("/")[0] for backing in used} == secrets.keys()  # none unused
    assert secrets[runtime.files["SIDECAR_TLS__CERT_FILE"].split("/")[0]]["type"] == (
        "kubernetes.io/tls"
    )


def test_the_secret_example_holds_placeholders_the_sidecar_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Applied by mistake, the example must fail loudly, not run with made-up secrets."""
    values = {
        f"{name}/{key}": value
        for name, secret in example_secrets().items()
        for key, value in secret["stringData"].items()
    }
    assert len(values) == 5
    for backing, value in values.items():
        assert value.startswith("PLACEHOLDER - "), backing
    monkeypatch.setenv("SIDECAR_ARCHIVE__URL", values["sidecar-archive/url"])
    with pytest.raises(ConfigError) as failure:
        load_settings(EXAMPLE_CONFIG, complete=False)
    assert [problem.split(":")[0] for problem in failure.value.problems] == ["archive.url"]


def test_compose_files_come_from_compose_secrets() -> None:
    runtime = compose_runtime()
    services = compose()["services"]
    assert set(runtime.files.values()) <= set(services["sidecar"]["secrets"])
    assert runtime.files["PGPASSFILE"] == "archive_pgpass"
    declared = compose()["secrets"]
    used = {name for service in services.values() for name in service.get("secrets", [])}
    assert used == declared.keys()
    for name in sorted(used):
        source = Path(declared[name]["file"])
        assert source.parts[0] == "secrets", source
        ignored = subprocess.run(
            ["git", "check-ignore", "--quiet", str(Path("deploy") / source)],
            cwd=ROOT,
            check=False,
        )
        assert ignored.returncode == 0, f"deploy/{source} is not git-ignored"
    assert "deploy/secrets" in (ROOT / ".dockerignore").read_text().split()


def local_environment(
    runtime: Runtime, *, cert_files: tuple[Path, Path], key_file: Path, pgpass_file: Path
) -> dict[str, str]:
    """The deployment's environment with each secret replaced by a real local file or value;
    its archive points at a PostgreSQL that is not there."""
    local = {
        "SIDECAR_TLS__CERT_FILE": str(cert_files[0]),
        "SIDECAR_TLS__KEY_FILE": str(cert_files[1]),
        "SIDECAR_AUDIT__ENCRYPTION_KEY_FILE": str(key_file),
        "PGPASSFILE": str(pgpass_file),
        "SIDECAR_ARCHIVE__URL": ABSENT_ARCHIVE_URL,
    }
    replaced = {*runtime.files, *runtime.secret_values}
    assert replaced <= local.keys()
    return {**runtime.env, **{name: local[name] for name in replaced}}


@pytest.fixture
def audit_key_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit.key"
    path.write_text(generate_key_line("k1") + "\n", encoding="utf-8")
    return path


@pytest.fixture
def pgpass_file(tmp_path: Path) -> Path:
    """A .pgpass of the shape deploy/README.md makes, 0600 as libpq wants it."""
    path = tmp_path / "archive.pgpass"
    path.write_text("127.0.0.1:1:sidecar:sidecar:not-a-password\n", encoding="utf-8")
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("where", ["compose", "kubernetes"])
def test_the_example_config_is_complete_with_the_deployments_environment(
    where: str,
    cert_files: tuple[Path, Path],
    audit_key_file: Path,
    pgpass_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime = compose_runtime() if where == "compose" else kubernetes_runtime()
    env = local_environment(
        runtime, cert_files=cert_files, key_file=audit_key_file, pgpass_file=pgpass_file
    )
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(EXAMPLE_CONFIG)  # complete: upstream and certificate required
    check_certificate(settings.tls)
    assert settings.audit.encryption_key_file is not None
    BodyCipher.from_file(settings.audit.encryption_key_file)
    assert settings.upstream.url == runtime.env["SIDECAR_UPSTREAM__URL"]
    assert settings.redis.url == runtime.env["SIDECAR_REDIS__URL"]
    # Both deployments archive: compose to the URL it writes out, Kubernetes to the Secret's.
    assert settings.archive.url == runtime.env.get("SIDECAR_ARCHIVE__URL", ABSENT_ARCHIVE_URL)
    assert settings.archive.redis_window_s == 3600  # the window Redis is sized for (README)


def test_without_the_environment_the_example_config_is_incomplete() -> None:
    """The deployments' environment is what makes it servable: nothing secret is in the file."""
    with pytest.raises(ConfigError) as failure:
        load_settings(EXAMPLE_CONFIG)
    assert {problem.split(":")[0] for problem in failure.value.problems} == {
        "upstream.url",
        "tls.cert_file",
        "tls.key_file",
    }


# --- Kubernetes: the pod ------------------------------------------------------------------


def test_probes_use_the_health_port_and_paths() -> None:
    settings = example_settings()
    sidecar = container("sidecar")
    readiness, liveness = sidecar["readinessProbe"]["httpGet"], sidecar["livenessProbe"]["httpGet"]
    assert readiness["path"] == "/readyz"
    assert liveness["path"] == "/healthz"  # never restart a pod because Redis is down
    assert container_port(sidecar, readiness["port"]) == settings.health.port
    assert container_port(sidecar, liveness["port"]) == settings.health.port
    assert container_port(sidecar, "https") == settings.listen.port
    assert container_port(sidecar, "health") == settings.health.port
    annotations = kube("Deployment", "app")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(settings.health.port)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_shutdown_fits_in_the_termination_grace_period() -> None:
    settings = example_settings()
    drain, grace = settings.shutdown.drain_s, settings.shutdown.grace_s
    pre_stop = sleep_seconds(container("sidecar")["lifecycle"]["preStop"])
    assert pre_stop == drain
    # The grace period counts from the start of preStop; SIGKILL comes at its end.
    sidecar_done = pre_stop + drain + grace
    period = pod_spec()["terminationGracePeriodSeconds"]
    assert period > sidecar_done
    # The app must still answer while the sidecar finishes its in-flight requests.
    app_stop = sleep_seconds(container("app")["lifecycle"]["preStop"])
    assert sidecar_done <= app_stop < period


def test_containers_are_locked_down() -> None:
    spec = pod_spec()
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["automountServiceAccountToken"] is False
    for name in ("app", "sidecar"):
        context = container(name)["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["capabilities"]["drop"] == ["ALL"], name
        assert context["runAsUser"] > 0, name
        assert "memory" in container(name)["resources"]["limits"], name
    sidecar = container("sidecar")
    final = dockerfile_stages()[-1]
    assert str(sidecar["securityContext"]["runAsUser"]) == final.last("USER").split(":")[0]
    assert spec["securityContext"]["fsGroup"] == sidecar["securityContext"]["runAsGroup"]
    assert sidecar["resources"]["limits"]["memory"] == "512Mi"  # two workers


@pytest.mark.parametrize("name", ["redis", "postgres"])
def test_the_stateful_sets_are_locked_down_too(name: str) -> None:
    pod = pod_spec("StatefulSet", name)
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for spec in pod["containers"]:
        context = spec["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, spec["name"]
        assert context["allowPrivilegeEscalation"] is False, spec["name"]
        assert context["capabilities"]["drop"] == ["ALL"], spec["name"]
        assert context.get("runAsUser", pod["securityContext"]["runAsUser"]) > 0, spec["name"]
        assert "memory" in spec["resources"]["limits"], spec["name"]
        assert spec["resources"]["requests"], spec["name"]


def test_the_app_is_reachable_only_from_inside_the_pod() -> None:
    upstream = urlsplit(k8s_env()["SIDECAR_UPSTREAM__URL"])
    assert upstream.hostname == "127.0.0.1"
    app = container("app")
    assert "ports" not in app
    command = app["command"]
    assert command[command.index("--bind") + 1] == "127.0.0.1"
    assert str(upstream.port) in command


def quantity_bytes(text: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9, "": 1}
    match = re.fullmatch(r"(\d+)([KMG]i?|)", text)
    assert match, text
    return int(match[1]) * units[match[2]]


def test_the_spool_volume_outgrows_the_spool_budget() -> None:
    """The sidecar must hit audit.spool_max_bytes (and answer 503) before the kubelet evicts the
    pod for overrunning its emptyDir, or a Redis outage would turn into lost records."""
    settings = example_settings()
    [mount] = [m for m in container("sidecar")["volumeMounts"] if m["name"] == "spool"]
    assert Path(mount["mountPath"]) == settings.audit.spool_dir
    [volume] = [v for v in pod_spec()["volumes"] if v["name"] == "spool"]
    assert quantity_bytes(volume["emptyDir"]["sizeLimit"]) > settings.audit.spool_max_bytes


def test_the_service_exposes_only_https() -> None:
    settings = example_settings()
    service = kube("Service", "app")
    [port] = service["spec"]["ports"]
    assert (port["name"], port["port"]) == ("https", 443)
    assert container_port(container("sidecar"), port["targetPort"]) == settings.listen.port
    deployment = kube("Deployment", "app")
    selected = service["spec"]["selector"].items()
    assert selected <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_network_policy_admits_the_proxy_and_health_ports_only() -> None:
    settings = example_settings()
    policy = kube("NetworkPolicy", "app")
    labels = kube("Deployment", "app")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert "Ingress" in policy["spec"]["policyTypes"]
    by_port = {}
    for rule in policy["spec"]["ingress"]:
        assert rule.get("ports"), "a rule without ports admits every port, the app's too"
        for port in rule["ports"]:
            by_port[port["port"]] = rule
    app_port = urlsplit(k8s_env()["SIDECAR_UPSTREAM__URL"]).port
    assert app_port not in by_port
    assert set(by_port) == {settings.listen.port, settings.health.port}
    assert "from" not in by_port[settings.listen.port]  # the proxy: from anywhere
    health_from = by_port[settings.health.port]["from"]
    assert health_from
    assert all("ipBlock" not in peer for peer in health_from)


def test_redis_is_a_stateful_set_with_a_volume_and_append_only_file() -> None:
    redis = kube("StatefulSet", "redis")
    spec = redis["spec"]
    [claim] = spec["volumeClaimTemplates"]
    [redis_container] = spec["template"]["spec"]["containers"]
    assert claim["metadata"]["name"] in {m["name"] for m in redis_container["volumeMounts"]}
    args = redis_container["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    service = kube("Service", spec["serviceName"])
    url = urlsplit(k8s_env()["SIDECAR_REDIS__URL"])
    assert url.hostname == service["metadata"]["name"]
    assert url.port in {port["port"] for port in service["spec"]["ports"]}
    assert_only_the_sidecars_reach("redis")


def assert_only_the_sidecars_reach(name: str) -> None:
    """The StatefulSet's headless Service selects its pods, and its NetworkPolicy admits only
    the app's pods (the sidecars), only on the Service's port."""
    stateful_set = kube("StatefulSet", name)
    labels = stateful_set["spec"]["template"]["metadata"]["labels"]
    service = kube("Service", stateful_set["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"  # headless: the pod's own stable name
    assert service["spec"]["selector"].items() <= labels.items()
    [port] = service["spec"]["ports"]
    [server] = stateful_set["spec"]["template"]["spec"]["containers"]
    assert container_port(server, port["targetPort"]) == port["port"]
    policy = kube("NetworkPolicy", name)
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    [rule] = policy["spec"]["ingress"]
    assert [peer["podSelector"]["matchLabels"] for peer in rule["from"]] == [
        kube("Deployment", "app")["spec"]["selector"]["matchLabels"]
    ]
    assert [p["port"] for p in rule["ports"]] == [port["port"]]


def postgres_env(pod: dict[str, Any]) -> dict[str, str]:
    [server] = pod["containers"]
    env = k8s_env(server["name"], pod)
    assert "POSTGRES_PASSWORD" not in env, "the password comes from a Secret's file"
    return env


_IMAGE_MAJOR = re.compile(r"postgres:(\d+)(@sha256:[0-9a-f]{64})?")


def test_postgres_is_a_stateful_set_on_a_claim_that_only_the_sidecars_reach() -> None:
    stateful_set = kube("StatefulSet", "postgres")
    pod = stateful_set["spec"]["template"]["spec"]
    [server] = pod["containers"]
    # A major version, not `latest` nor a minor: a new major cannot read the old data directory.
    assert _IMAGE_MAJOR.fullmatch(server["image"]), server["image"]
    [claim] = stateful_set["spec"]["volumeClaimTemplates"]
    [data] = [m for m in server["volumeMounts"] if m["name"] == claim["metadata"]["name"]]
    # Below the claim's root, which may hold lost+found where initdb wants an empty directory.
    pgdata = Path(postgres_env(pod)["PGDATA"])
    assert Path(data["mountPath"]) in pgdata.parents
    probe = server["readinessProbe"]["exec"]["command"]
    assert probe[0] == "pg_isready"
    assert probe[probe.index("--host") + 1] == "127.0.0.1"  # not the init server's socket
    assert "livenessProbe" not in server  # a restart would only start crash recovery again
    # Writable where the server writes, though its root filesystem is not.
    mounted = {m["mountPath"] for m in server["volumeMounts"]}
    assert {"/var/run/postgresql", "/tmp"} <= mounted
    assert pod["terminationGracePeriodSeconds"] > 30  # the shutdown checkpoint
    assert_only_the_sidecars_reach("postgres")


def readme_archive_url() -> tuple[str, str, int, str]:
    """(user, host, port, database) of the archive.url deploy/README.md makes for Kubernetes."""
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    [match] = re.findall(r"printf 'postgresql://(\w+):%s@([\w.-]+):(\d+)/(\w+)(\\n)?'", readme)
    user, host, port, database, newline = match
    # The Secret's bytes become the variable's value: a newline would be in the database name.
    assert not newline
    return user, host, int(port), database


def test_the_documented_archive_url_names_the_in_cluster_postgres() -> None:
    env = postgres_env(pod_spec("StatefulSet", "postgres"))
    service = kube("Service", kube("StatefulSet", "postgres")["spec"]["serviceName"])
    [port] = service["spec"]["ports"]
    name = service["metadata"]["name"]
    assert readme_archive_url() == (env["POSTGRES_USER"], name, port["port"], env["POSTGRES_DB"])


# --- compose --------------------------------------------------------------------------------


def test_compose_runs_the_sidecar_in_front_of_an_unexposed_app() -> None:
    settings = example_settings()
    services = compose()["services"]
    assert set(services) == {"app", "sidecar", "redis", "postgres"}
    networks = compose()["networks"]
    for name in ("app", "redis", "postgres"):
        assert "ports" not in services[name], name
        for network in services[name]["networks"]:
            assert networks[network].get("internal") is True, f"{name} on {network}"
    sidecar = services["sidecar"]
    published = {tuple(int(p) for p in port.split(":")[-2:]) for port in sidecar["ports"]}
    assert published == {
        (settings.listen.port, settings.listen.port),
        (settings.health.port, settings.health.port),
    }
    assert sidecar["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert urlsplit(compose_env()["SIDECAR_UPSTREAM__URL"]).hostname == "app"
    assert urlsplit(compose_env()["SIDECAR_REDIS__URL"]).hostname == "redis"
    assert sidecar["depends_on"]["redis"]["condition"] == "service_healthy"
    spool = [v for v in sidecar["volumes"] if v.split(":")[1] == str(settings.audit.spool_dir)]
    assert spool
    assert spool[0].split(":")[0] in compose()["volumes"]


def test_compose_gives_the_sidecar_time_to_shut_down() -> None:
    settings = example_settings()
    sidecar = compose()["services"]["sidecar"]
    assert sidecar.get("stop_signal", "SIGTERM") == "SIGTERM"
    budget = settings.shutdown.drain_s + settings.shutdown.grace_s
    assert compose_seconds(sidecar["stop_grace_period"]) > budget


def test_compose_redis_persists_and_is_health_checked() -> None:
    redis = compose()["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    [volume] = redis["volumes"]
    assert volume.split(":")[0] in compose()["volumes"]
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])


def test_compose_postgres_persists_is_health_checked_and_reads_its_password_from_a_secret() -> None:
    postgres = compose()["services"]["postgres"]
    # The same major as in Kubernetes: one version to test the schema against.
    assert _IMAGE_MAJOR.fullmatch(postgres["image"]), postgres["image"]
    assert postgres["image"] == container("postgres", pod_spec("StatefulSet", "postgres"))["image"]
    [volume] = postgres["volumes"]
    name, data_dir = volume.split(":")
    assert name in compose()["volumes"]
    assert data_dir == "/var/lib/postgresql/data"  # the image's PGDATA up to major 17
    check = postgres["healthcheck"]["test"]
    assert check[:2] == ["CMD", "pg_isready"]
    assert check[check.index("--host") + 1] == "127.0.0.1"  # not the init server's socket
    env = postgres["environment"]
    assert "POSTGRES_PASSWORD" not in env, "the password comes from a compose secret"
    password = Path(env["POSTGRES_PASSWORD_FILE"])
    assert password.parent == Path("/run/secrets")
    assert password.name in postgres["secrets"]
    assert compose_seconds(postgres["stop_grace_period"]) > 10  # compose's default cuts it


def test_compose_archives_into_its_postgres_with_the_password_in_a_secret() -> None:
    """The URL carries no password (compose passes secrets as files only, and archive.url has
    no _file form): libpq reads it from PGPASSFILE, whose line must match the URL."""
    url = urlsplit(compose_env()["SIDECAR_ARCHIVE__URL"])
    assert url.scheme == "postgresql"
    assert url.password is None
    assert url.hostname
    postgres = compose()["services"][url.hostname]
    assert postgres["image"].startswith("postgres:")
    assert url.port == 5432  # the image's
    assert url.username == postgres["environment"]["POSTGRES_USER"]
    assert url.path == "/" + postgres["environment"]["POSTGRES_DB"]
    assert compose_runtime().files["PGPASSFILE"] in compose()["services"]["sidecar"]["secrets"]
    # deploy/README.md makes the .pgpass line: host:port:database:user:password, exactly.
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    line = f"{url.hostname}:{url.port}:{url.path[1:]}:{url.username}:%s\\n"
    assert f"printf '{line}'" in readme
    # Ordered after it, but not waiting for it: the sidecar serves without its archive.
    assert compose()["services"]["sidecar"]["depends_on"]["postgres"] == {
        "condition": "service_started"
    }


# --- the Dockerfile -----------------------------------------------------------------------

_COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|cc|build-essential|make|python3?-dev)\b")


def test_the_image_builds_wheels_then_installs_them_without_compilers() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    builder, final = stages[0], stages[-1]
    assert builder.name, "the builder stage is named, for COPY/--mount from=…"
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?(@sha256:[0-9a-f]{64})?", builder.base)
    assert re.fullmatch(r"python:3\.1[12]-slim(-\w+)?(@sha256:[0-9a-f]{64})?", final.base)
    assert any("pip wheel" in run for run in builder.all("RUN"))
    final_runs = " ".join(final.all("RUN"))
    assert not _COMPILERS.search(final_runs)
    assert "apt-get install" not in final_runs
    assert "apk add" not in final_runs
    installs = [run for run in final.all("RUN") if "pip install" in run]
    assert installs
    assert all("--no-index" in run for run in installs)
    assert all(f"from={builder.name}" in run for run in installs)
    assert not [args for args in final.all("COPY") if "--from" not in args]  # no source tree


def test_the_image_runs_as_a_numeric_non_root_user() -> None:
    final = dockerfile_stages()[-1]
    user = final.last("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), f"USER {user}: a numeric UID"
    assert int(uid) > 0, f"USER {user}: not root"
    assert not gid or (gid.isdigit() and int(gid) > 0)
    # The spool directory exists and belongs to that user before the VOLUME is declared.
    spool = str(example_settings().audit.spool_dir)
    owning = [run for run in final.all("RUN") if spool in run and f"--owner {uid}" in run]
    assert owning
    assert exec_form(final.last("VOLUME")) == [spool]
    order = [kw for kw, _args in final.instructions]
    assert order.index("VOLUME") > max(i for i, kw in enumerate(order) if kw == "RUN")


def test_the_image_exposes_the_ports_and_checks_health() -> None:
    settings = example_settings()
    final = dockerfile_stages()[-1]
    exposed = {int(port.split("/")[0]) for args in final.all("EXPOSE") for port in args.split()}
    assert exposed == {settings.listen.port, settings.health.port}
    assert final.last("STOPSIGNAL") == "SIGTERM"
    command = healthcheck_command(final)
    assert command[0] == "python"  # no curl in the slim image
    assert f"http://127.0.0.1:{settings.health.port}/healthz" in command[-1]


# The test extra installs it into the virtualenv, which need not be on PATH.
HADOLINT = shutil.which("hadolint") or shutil.which(
    "hadolint", path=str(Path(sys.executable).parent)
)


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed")
def test_hadolint_passes() -> None:
    linted = subprocess.run(
        [str(HADOLINT), str(DEPLOY / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def excluded(path: str, patterns: list[str]) -> bool:
    """Roughly Docker's rule: a pattern excludes what it matches and everything below it."""
    assert not any(p.startswith("!") for p in patterns), "exceptions: extend this check"
    return any(
        fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path, pattern.rstrip("/") + "/*")
        for pattern in patterns
    )


def test_the_build_context_keeps_what_the_image_needs_and_drops_the_rest() -> None:
    patterns = dockerignore_patterns()
    copied = [args.split()[:-1] for args in dockerfile_stages()[0].all("COPY")]
    sources = {source for sources in copied for source in sources}
    assert sources == {"pyproject.toml", "README.md", "sidecar"}
    tracked = subprocess.run(
        ["git", "ls-files", *sorted(sources)], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert "sidecar/cli/main.py" in tracked
    assert [path for path in tracked if excluded(path, patterns)] == []
    for dropped in (
        ".venv/bin/python",
        ".git/HEAD",
        "bench/out/results.json",
        "spool/audit/000001.log",
        "deploy/secrets/tls.key",
        ".pytest_cache/README.md",
        "sidecar/cli/__pycache__/main.cpython-312.pyc",
    ):
        assert excluded(dropped, patterns), dropped


# --- no secrets ---------------------------------------------------------------------------

_PRIVATE_KEY = re.compile(r"-----BEGIN ([A-Z0-9 ]+ )?PRIVATE KEY-----")
_AUDIT_KEY_LINE = re.compile(r"[A-Za-z0-9_-]{1,32}:[A-Za-z0-9+/]{43}=")
# A password in a PostgreSQL URL: only the README's printf slot or a word in capitals may stand
# there, never a value.
_URL_PASSWORD = re.compile(r"postgres(?:ql)?://[^:/@\s]+:([^@\s]+)@")
_PASSWORD_STAND_INS = frozenset({"%s", "PASSWORD"})


def test_nothing_secret_is_committed_under_deploy() -> None:
    files = [path for path in DEPLOY.rglob("*") if path.is_file()]
    assert len(files) >= 14
    stand_ins = set()
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert not _PRIVATE_KEY.search(text), path
        assert not KEY_PATTERN.search(text), path
        assert not _AUDIT_KEY_LINE.search(text), path
        passwords = set(_URL_PASSWORD.findall(text))
        assert passwords <= _PASSWORD_STAND_INS, (path, passwords)
        stand_ins |= passwords
    assert stand_ins == _PASSWORD_STAND_INS  # the pattern does find the documented URLs
    # The patterns do find the real things.
    assert _URL_PASSWORD.findall("postgresql://sidecar:0f3a9c@postgres:5432/sidecar") == ["0f3a9c"]
    assert _AUDIT_KEY_LINE.fullmatch(generate_key_line("k1"))
    # Built from parts, so secret scanners do not flag this file for a PEM header.
    assert _PRIVATE_KEY.search("-----BEGIN EC " + "PRIVATE KEY-----")


# --- the example, running; and the metric names it exports ---------------------------------


@pytest.fixture
async def example_sidecar(
    cert_files: tuple[Path, Path],
    audit_key_file: Path,
    pgpass_file: Path,
    redis_server: EmbeddedRedis,
    upstream: UpstreamServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Running]:
    """deploy/sidecar.yaml with the Kubernetes environment, on local ports, files and Redis;
    its archive is configured, but no PostgreSQL answers there."""
    env = local_environment(
        kubernetes_runtime(),
        cert_files=cert_files,
        key_file=audit_key_file,
        pgpass_file=pgpass_file,
    )
    env |= {
        "SIDECAR_UPSTREAM__URL": upstream.url,
        "SIDECAR_REDIS__URL": redis_server.url,
        "SIDECAR_LISTEN__ADDRESS": "127.0.0.1",
        "SIDECAR_LISTEN__PORT": "0",
        "SIDECAR_HEALTH__ADDRESS": "127.0.0.1",
        "SIDECAR_HEALTH__PORT": "0",
        "SIDECAR_AUDIT__SPOOL_DIR": str(tmp_path / "spool"),
        "SIDECAR_SHUTDOWN__DRAIN_S": "0",
        "SIDECAR_SHUTDOWN__GRACE_S": "5",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if not redis_server.running:
        redis_server.start()
    settings = load_settings(EXAMPLE_CONFIG)
    async with running(settings, check_certificate(settings.tls)) as server:
        yield server


async def test_the_example_config_serves_and_the_image_healthcheck_sees_it(
    example_sidecar: Running, client_ssl: ssl.SSLContext
) -> None:
    health = f"http://127.0.0.1:{example_sidecar.health_port}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        async with session.get(f"{health}/readyz") as answer:
            assert answer.status == 200, await answer.text()
            assert "archive" in (await answer.json())["checks"]
        async with session.get(
            f"https://localhost:{example_sidecar.proxy_port}/status", ssl=client_ssl
        ) as answer:
            assert answer.status == 200  # the public route of the example, forwarded
        async with session.get(
            f"https://localhost:{example_sidecar.proxy_port}/v1/orders/1", ssl=client_ssl
        ) as answer:
            assert answer.status == 401  # and the others want a key
        async with session.get(
            f"https://localhost:{example_sidecar.proxy_port}/elsewhere", ssl=client_ssl
        ) as answer:
            assert answer.status == 403  # default_route: deny
        # Those requests' records are for the archive, whose PostgreSQL is not there: /readyz
        # says so, and stays 200 (the records wait in Redis; SPEC §15).
        archive = await archive_check_once_failing(session, f"{health}/readyz")
        assert "PostgreSQL unreachable" in archive, archive

    default = f"127.0.0.1:{Health().port}/"
    actual = f"127.0.0.1:{example_sidecar.health_port}/"
    checks = {
        "Dockerfile": healthcheck_command(dockerfile_stages()[-1]),
        "compose": compose()["services"]["sidecar"]["healthcheck"]["test"][1:],
    }
    for where, command in checks.items():
        assert command[0] == "python", where  # no curl in the slim image
        assert default in command[-1], where
        assert await exit_code(command, command[-1].replace(default, actual)) == 0, where
        # …and fails when nothing answers there: the check can tell.
        closed = command[-1].replace(default, "127.0.0.1:1/")
        assert await exit_code(command, closed) != 0, where


async def archive_check_once_failing(session: aiohttp.ClientSession, readyz: str) -> str:
    """/readyz's `archive` check once the archiver has tried and failed, each answer 200."""
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        async with session.get(readyz) as answer:
            body = await answer.json()
            assert answer.status == 200, body
        archive: str = body["checks"]["archive"]
        if archive != "ok" or asyncio.get_running_loop().time() > deadline:
            return archive
        await asyncio.sleep(0.1)


async def exit_code(command: list[str], last_argument: str) -> int:
    """Run a `python …` health check with this interpreter and another last argument."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *command[1:-1],
        last_argument,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(process.wait(), 30)


def metric_names(exposition: str) -> set[str]:
    """Every sample name the page can carry, including families that have no samples yet
    (a labelled counter before its first increment still declares its type)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
    }
    names = set()
    for family in text_string_to_metric_families(exposition):
        names |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
    return names


@pytest.fixture
async def exported(example_sidecar: Running) -> set[str]:
    url = f"http://127.0.0.1:{example_sidecar.health_port}/metrics"
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as answer:
        assert answer.status == 200
        names = metric_names(await answer.text())
    for family in (*SPEC_METRICS, *ARCHIVE_METRICS):  # histograms: _bucket, _sum and _count
        assert family in names or f"{family}_bucket" in names, family
    return names


def dashboard_queries() -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every query of the dashboard, its variables' too."""
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text(encoding="utf-8"))
    panels = [p for row in dashboard["panels"] for p in [row, *row.get("panels", [])]]
    for panel in panels:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            values = re.fullmatch(r"label_values\((\w+),\s*\w+\)", text)
            assert values, f"variable {variable['name']}: {text}"
            yield f"${variable['name']}", values[1]


def test_the_dashboard_is_well_formed() -> None:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text(encoding="utf-8"))
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"]
    assert dashboard["title"]
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


async def test_the_dashboard_queries_exported_metrics_and_shows_every_one(
    exported: set[str],
) -> None:
    used: set[str] = set()
    for title, expr in dashboard_queries():
        names = promql_metrics(expr.replace("$__rate_interval", "5m"))
        assert names, f"{title}: {expr}"
        assert names <= exported, f"{title}: not exported: {sorted(names - exported)}"
        used |= names
    for family in (*SPEC_METRICS, *ARCHIVE_METRICS):
        assert any(name.startswith(family) for name in used), f"no panel shows {family}"
    quantiles = [expr for _title, expr in dashboard_queries() if "histogram_quantile" in expr]
    for histogram in ("sidecar_request_duration_seconds", "sidecar_upstream_duration_seconds"):
        for q in ("0.5", "0.99"):
            assert any(f"({q}," in e and f"{histogram}_bucket" in e for e in quantiles)


def alert_rules() -> list[dict[str, Any]]:
    [document] = documents(DEPLOY / "alerts.yaml")
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_the_alert_rules_are_well_formed() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        if "for" in rule:
            assert re.fullmatch(r"\d+[smhd]", rule["for"]), rule["alert"]
    # The spool threshold is written as a number: it must follow audit.spool_max_bytes.
    [nearly_full] = [rule for rule in rules if rule["alert"] == "SidecarAuditSpoolNearlyFull"]
    assert f"* {example_settings().audit.spool_max_bytes}" in nearly_full["expr"]


async def test_the_alerts_read_exported_metrics_and_cover_the_failure_modes(
    exported: set[str],
) -> None:
    watched: dict[str, str] = {}
    for rule in alert_rules():
        names = promql_metrics(rule["expr"])
        assert names, rule["alert"]
        unknown = names - exported - EXTERNAL_METRICS.keys()
        assert not unknown, f"{rule['alert']}: not exported: {sorted(unknown)}"
        watched |= dict.fromkeys(names, rule["expr"])
    for needed in (
        "sidecar_audit_spool_bytes",
        "sidecar_audit_records_total",
        "sidecar_redis_errors_total",
        "sidecar_requests_total",
        "sidecar_keys_rotation_due",
        "sidecar_argon2_verifications_total",
        "sidecar_auth_events_total",
        "kube_pod_container_status_ready",
        "sidecar_archive_lag_seconds",
        "sidecar_archive_records_total",
    ):
        assert needed in watched, f"no alert on {needed}"
    assert 'outcome="rejected"' in watched["sidecar_audit_records_total"]
    assert 'outcome="dead_letter"' in watched["sidecar_archive_records_total"]
    assert "missing_key" in watched["sidecar_auth_events_total"]
    assert "invalid_secret" in watched["sidecar_auth_events_total"]
    assert 'status=~"5.."' in watched["sidecar_requests_total"]


# promtool (Prometheus' own checker) is not a Python package: install it with the system's
# package manager (Debian: `prometheus`) for these two; without it they are skipped.
PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
def test_promtool_accepts_the_rules() -> None:
    """The rules parse as Prometheus parses them, templates included (the reader above only
    pulls out metric names)."""
    checked = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(DEPLOY / "alerts.yaml")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
def test_the_archive_alerts_fire_when_they_should(tmp_path: Path) -> None:
    """The archive's alerts on made-up series. A dead-letter counter appears with its first
    increment, at 1 and no 0 before it, which `increase()` alone never sees: the alert must
    fire for it all the same, and stop once the window has passed."""
    [document] = documents(DEPLOY / "alerts.yaml")
    for group in document["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations")  # promtool compares them whole; the summaries are not tested
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    labels = {"severity": "warning", "stream": "sidecar:audit"}
    tests = {
        "rule_files": ["alerts.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {  # absent for 20 minutes, then one dead letter
                        "series": 'sidecar_archive_records_total{instance="a:8081",'
                        'stream="sidecar:audit",outcome="dead_letter"}',
                        "values": "_x20 1x40",
                    },
                    {  # caught up for 5 minutes, then 400 s behind
                        "series": 'sidecar_archive_lag_seconds{instance="a:8081",'
                        'stream="sidecar:audit"}',
                        "values": "0x5 400x30",
                    },
                    {  # another stream, caught up all along
                        "series": 'sidecar_archive_lag_seconds{instance="a:8081",'
                        'stream="sidecar:auth-events"}',
                        "values": "0x35",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "19m",
                        "alertname": "SidecarArchiveDeadLetters",
                        "exp_alerts": [],
                    },
                    {
                        "eval_time": "21m",
                        "alertname": "SidecarArchiveDeadLetters",
                        "exp_alerts": [{"exp_labels": labels}],
                    },
                    {
                        "eval_time": "50m",
                        "alertname": "SidecarArchiveDeadLetters",
                        "exp_alerts": [],
                    },
                    {"eval_time": "14m", "alertname": "SidecarArchiveLagging", "exp_alerts": []},
                    {
                        "eval_time": "17m",
                        "alertname": "SidecarArchiveLagging",
                        "exp_alerts": [{"exp_labels": labels}],
                    },
                ],
            }
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests), encoding="utf-8")
    tested = subprocess.run(
        [str(PROMTOOL), "test", "rules", "tests.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
