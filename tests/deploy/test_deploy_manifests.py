"""deploy/: the Kubernetes manifests (kustomize base, cpu and gpu overlays) validate against the Kubernetes
schemas (kubernetes-validate, strict; KEDA's ScaledObject against the part of its CRD schema we use), and agree
with the code and the Dockerfiles: images, ports, probe paths (real routes of both apps), environment variable
names, secrets, volumes, the upload limit, the queue the worker consumes and KEDA watches."""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DOCKER = ROOT / "deploy" / "docker"
K8S_VERSION = "1.30.0"
THIRD_PARTY_ENV = {"HOME", "GRADIO_ANALYTICS_ENABLED", "PGDATA"}  # read by Python, Gradio and PostgreSQL
SECRET_VALUES = {"DATABASE_URL": "postgresql://u:p@postgres:5432/db", "SECRET_KEY": "s",
                 "QUEUE_URL": "redis://redis:6379/0"}


def _docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def _render(overlay: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed; the base files are still validated")
    result = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return _docs(result.stdout)


@pytest.fixture(scope="module", params=["cpu", "gpu"])
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, _render(request.param)


def _one(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _container(workload: dict, name: str) -> dict:
    return next(c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


# The fields of KEDA's ScaledObject (keda.sh/v1alpha1) used here, from its CRD; unknown fields are refused.
_STR = {"type": "string"}
_INT = {"type": "integer", "minimum": 0}
SCALED_OBJECT_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"}, "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {"type": "object", "additionalProperties": False, "required": ["scaleTargetRef", "triggers"],
                 "properties": {
                     "scaleTargetRef": {"type": "object", "additionalProperties": False, "required": ["name"],
                                        "properties": {"apiVersion": _STR, "kind": _STR, "name": _STR}},
                     "minReplicaCount": _INT, "maxReplicaCount": _INT, "pollingInterval": _INT,
                     "cooldownPeriod": _INT, "idleReplicaCount": _INT,
                     "advanced": {"type": "object", "additionalProperties": False, "properties": {
                         "restoreToOriginalReplicaCount": {"type": "boolean"},
                         "horizontalPodAutoscalerConfig": {"type": "object", "additionalProperties": False,
                                                           "properties": {"name": _STR, "behavior": {"type": "object"}}}}},
                     "triggers": {"type": "array", "minItems": 1, "items": {
                         "type": "object", "additionalProperties": False, "required": ["type", "metadata"],
                         "properties": {"type": {"enum": ["redis", "metrics-api", "prometheus", "cpu", "memory"]},
                                        "name": _STR, "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                                        "metadata": {"type": "object", "additionalProperties": _STR},
                                        "authenticationRef": {"type": "object"}}}}}}}}


def _validate(doc: dict) -> None:
    if doc.get("apiVersion", "").startswith("keda.sh/"):
        import jsonschema

        jsonschema.validate(doc, SCALED_OBJECT_SCHEMA)
        behavior = doc["spec"].get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
        if behavior:  # what KEDA hands to its HorizontalPodAutoscaler: checked against the Kubernetes schema
            _validate({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "x"},
                       "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 1,
                                "behavior": behavior}})
        return
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        raise AssertionError(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at "
                             f"{'.'.join(map(str, exc.path))}") from exc


def test_base_resource_files_validate_on_their_own():
    """Runs without kubectl: every resource file the base lists is valid Kubernetes, strictly."""
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    kinds = set()
    for name in kustomization["resources"]:
        for doc in _docs((K8S / "base" / name).read_text()):
            _validate(doc)
            kinds.add(doc["kind"])
    assert {"Namespace", "Secret", "PersistentVolumeClaim", "Service", "StatefulSet", "Deployment", "Job",
            "ScaledObject", "Ingress", "NetworkPolicy"} <= kinds
    assert "HorizontalPodAutoscaler" not in kinds  # KEDA makes its own; two would fight over the model pods
    for overlay in ("cpu", "gpu"):
        k = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())
        assert k["resources"] == ["../../base"]
        assert all((K8S / "overlays" / overlay / p["path"]).is_file() for p in k["patches"])


def test_rendered_overlays_validate_strictly(rendered):
    overlay, docs = rendered
    assert len(docs) >= 13
    for doc in docs:
        _validate(doc)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "talking-head", doc["metadata"]


def test_probe_paths_are_routes_of_the_apps(rendered, tmp_path):
    from demofront import create_app
    from demofront.config import Config

    _, docs = rendered
    app = create_app(Config(database_url=f"sqlite:///{tmp_path / 'p.db'}", data_dir=tmp_path / "d",
                            secret_key="x", testing=True, queue_url="memory://"), model_client=object())
    try:
        front_routes = {rule.rule for rule in app.url_map.iter_rules()}
    finally:
        app.extensions["demofront"].close()
    model_routes = _model_service_routes(tmp_path)
    for kind, name, container, routes in (("Deployment", "front", "front", front_routes),
                                          ("Deployment", "sadtalker-model", "model", model_routes)):
        workload = _one(docs, kind, name)
        c = _container(workload, container)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            get = c[probe]["httpGet"]
            assert get["path"] in routes, (name, probe, get["path"])
            assert get["port"] in ports
    assert _container(_one(docs, "Deployment", "front"), "front")["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert _container(_one(docs, "Deployment", "front"), "front")["livenessProbe"]["httpGet"]["path"] == "/livez"


def _model_service_routes(tmp_path: Path) -> set[str]:
    from app import create_app as create_model_app  # SadTalker/app.py

    from sadtalker.service.model_service import ModelService
    from sadtalker.service.settings import ServiceSettings
    from sadtalker.weights import CheckpointLocations

    service = ModelService(ServiceSettings(results_dir=tmp_path / "r",
                                           locations=CheckpointLocations(checkpoint_dir=tmp_path / "none")))
    return {getattr(route, "path", None) for route in create_model_app(service).routes}


def test_ports_services_queue_and_scaling_agree(rendered, tmp_path):
    from urllib.parse import urlsplit

    from demofront.config import Config
    from demofront.tasks import GENERATE_QUEUE

    _, docs = rendered
    front = _one(docs, "Deployment", "front")
    model = _one(docs, "Deployment", "sadtalker-model")
    fc, mc, wc = _container(front, "front"), _container(model, "model"), _container(model, "worker")
    fenv, menv, wenv = _env(fc), _env(mc), _env(wc)
    assert front["spec"]["replicas"] == 2
    assert fc["ports"][0]["containerPort"] == int(fenv["FRONT_PORT"]["value"])
    assert mc["ports"][0]["containerPort"] == int(menv["SADTALKER_PORT"]["value"])
    assert menv["SADTALKER_CONCURRENCY"]["value"] == "1"  # one generation per pod
    # the worker: the front's image running DemoFront/worker.py, talking to the model service in its own pod
    assert wc["image"].startswith("talking-head/front") and wc["command"] == ["python", "DemoFront/worker.py"]
    assert wenv["SADTALKER_URL"]["value"] == f"http://127.0.0.1:{mc['ports'][0]['containerPort']}/"
    assert "ports" not in wc and not any(d["kind"] == "Service" and d["metadata"]["name"] == "sadtalker-model"
                                         for d in docs)  # nothing connects to a model pod
    service = _one(docs, "Service", "front")
    labels = front["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
    assert all(p["targetPort"] in {p2["name"] for p2 in fc["ports"]} for p in service["spec"]["ports"])
    # one queue: the secret's QUEUE_URL is the Redis Service, which KEDA watches, on the list the workers consume
    secret = _one(docs, "Secret", "talking-head-secrets")["stringData"]
    redis_service = _one(docs, "Service", "redis")
    queue = urlsplit(secret["QUEUE_URL"])
    assert queue.scheme == "redis" and queue.hostname == "redis" and queue.port == redis_service["spec"]["ports"][0]["port"]
    for env in (fenv, wenv):
        assert env["QUEUE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "QUEUE_URL"
    config = Config.from_env({"QUEUE_URL": secret["QUEUE_URL"]})
    scaled = _one(docs, "ScaledObject", "sadtalker-model")
    assert scaled["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "sadtalker-model"}
    assert 1 <= scaled["spec"]["minReplicaCount"] < scaled["spec"]["maxReplicaCount"]
    triggers = {t["type"]: t["metadata"] for t in scaled["spec"]["triggers"]}
    namespace = _one(docs, "Namespace", "talking-head")["metadata"]["name"]
    assert triggers["redis"]["listName"] == f"{config.queue_namespace}:{GENERATE_QUEUE}"
    assert triggers["redis"]["address"] == f"redis.{namespace}.svc.cluster.local:{queue.port}"
    assert triggers["redis"]["databaseIndex"] == queue.path.strip("/")
    url = urlsplit(triggers["metrics-api"]["url"])
    assert url.hostname == f"front.{namespace}.svc.cluster.local" and url.path == "/api/health"
    from demofront import create_app

    app = create_app(Config(database_url=f"sqlite:///{tmp_path / 'h.db'}", data_dir=tmp_path / "d", secret_key="x",
                            testing=True, queue_url="memory://"), model_client=object())
    try:
        health = app.test_client().get(url.path).json
    finally:
        app.extensions["demofront"].close()
    assert health[triggers["metrics-api"]["valueLocation"]] == 0  # the value KEDA reads exists
    # the ingress lets through exactly the uploads the front accepts, to the front's Service port
    config = Config.from_env({k: v.get("value", SECRET_VALUES.get(k, "x")) for k, v in fenv.items()})
    ingress = _one(docs, "Ingress", "talking-head")
    body = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert body == f"{config.max_upload_mb:g}m"
    assert int(ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > \
        config.wait_timeout_seconds
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "front" and backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}


def _names_read_by_code() -> str:
    return "\n".join(p.read_text() for folder in ("SadTalker", "DemoFront") for p in (ROOT / folder).rglob("*.py"))


def test_env_names_secrets_and_volumes_agree_with_the_code(rendered):
    _, docs = rendered
    code = _names_read_by_code()
    secret = _one(docs, "Secret", "talking-head-secrets")
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")]
    for workload in workloads:
        spec = workload["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        volumes.update({t["metadata"]["name"]: {} for t in workload["spec"].get("volumeClaimTemplates", [])})
        for c in spec.get("initContainers", []) + spec["containers"]:
            for name, entry in _env(c).items():
                if c["image"].startswith("talking-head/"):
                    assert name in THIRD_PARTY_ENV or f'"{name}"' in code, f"{c['name']}: {name} is read by no code"
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "talking-head-secrets" and ref["key"] in secret["stringData"]
            for source in c.get("envFrom", []):
                assert source["secretRef"]["name"] == "talking-head-secrets"
            for mount in c.get("volumeMounts", []):
                assert mount["name"] in volumes, (c["name"], mount["name"])
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
        assert spec["securityContext"]["runAsNonRoot"] is True
    # checkpoints: written by the Job, read-only in every model pod, where SADTALKER_CHECKPOINTS points
    job = _one(docs, "Job", "download-models")
    jc = _container(job, "download")
    assert jc["command"][-1] == "scripts/download_models.sh" and (ROOT / jc["command"][-1]).is_file()
    model = _one(docs, "Deployment", "sadtalker-model")
    mc = _container(model, "model")
    mount = next(m for m in mc["volumeMounts"] if m["name"] == "checkpoints")
    assert mount["readOnly"] is True and mount["mountPath"] == _env(mc)["SADTALKER_CHECKPOINTS"]["value"]
    assert next(m for m in jc["volumeMounts"] if m["name"] == "checkpoints")["mountPath"] == \
        _env(jc)["SADTALKER_CHECKPOINTS"]["value"]
    for c in (_container(_one(docs, "Deployment", "front"), "front"), _container(model, "worker")):
        assert next(m for m in c["volumeMounts"] if m["name"] == "videos")["mountPath"] == _env(c)["DATA_DIR"]["value"]


def _base_docs() -> list[dict]:
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    return [d for name in kustomization["resources"] for d in _docs((K8S / "base" / name).read_text())]


def _selects(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, f"only matchLabels selectors are checked here: {selector}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _pod_labels(docs: list[dict]) -> dict[str, dict]:
    """Every workload's pod labels, by workload name."""
    return {d["metadata"]["name"]: d["spec"]["template"]["metadata"].get("labels", {})
            for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")}


@pytest.mark.parametrize("source", ["base", "cpu", "gpu"])
def test_model_pods_take_no_connections_and_redis_only_the_apps(source):
    """The model pods' one policy allows no ingress (the worker talks to the model service on localhost); Redis
    takes connections from the front and model pods only, on its port; no other policy opens either wider."""
    docs = _base_docs() if source == "base" else _render(source)
    pods = _pod_labels(docs)

    def policies_for(workload: str) -> list[dict]:
        return [d for d in docs if d["kind"] == "NetworkPolicy" and _selects(d["spec"]["podSelector"], pods[workload])]

    (model,) = policies_for("sadtalker-model")
    assert model["spec"]["policyTypes"] == ["Ingress"] and model["spec"].get("ingress", []) == []
    assert [n for n, labels in pods.items() if _selects(model["spec"]["podSelector"], labels)] == ["sadtalker-model"]
    (redis,) = policies_for("redis")
    (rule,) = redis["spec"]["ingress"]
    port = _container(_one(docs, "StatefulSet", "redis"), "redis")["ports"][0]["containerPort"]
    assert rule["ports"] == [{"protocol": "TCP", "port": port}]
    allowed = set()
    for peer in rule["from"]:
        assert set(peer) == {"podSelector"}, peer  # same namespace, pods only: no namespaceSelector, no ipBlock
        allowed |= {n for n, labels in pods.items() if _selects(peer["podSelector"], labels)}
    assert allowed == {"front", "sadtalker-model"}
    front = _container(_one(docs, "Deployment", "front"), "front")
    assert _env(front)["TRUSTED_PROXIES"]["value"] == "1"  # behind the Ingress (one proxy)


def test_gpu_overlay_asks_for_one_gpu_and_gpu_nodes_and_cpu_does_not(rendered):
    overlay, docs = rendered
    model = _one(docs, "Deployment", "sadtalker-model")
    spec = model["spec"]["template"]["spec"]
    c = _container(model, "model")
    images = {c2["image"] for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")
              for c2 in d["spec"]["template"]["spec"]["containers"] + d["spec"]["template"]["spec"].get("initContainers", [])}
    if overlay == "gpu":
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert _env(c)["SADTALKER_DEVICE"]["value"] == "cuda"
        assert spec["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
        assert c["image"] == "talking-head/model:gpu"
    else:
        assert "nvidia.com/gpu" not in str(model)
        assert _env(c)["SADTALKER_DEVICE"]["value"] == "cpu" and c["image"] == "talking-head/model:cpu"
    assert {i for i in images if i.startswith("talking-head/")} == {f"talking-head/model:{overlay}",
                                                                     "talking-head/front:latest"}


# -- Dockerfiles ------------------------------------------------------------------------------------------------

def _dockerfile(name: str) -> list[tuple[str, str]]:
    text = (DOCKER / name).read_text().replace("\\\n", " ")
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("name, port, script", [("front.Dockerfile", 5000, "DemoFront/app.py"),
                                                ("model.Dockerfile", 7860, "SadTalker/app.py"),
                                                ("model-gpu.Dockerfile", 7860, "SadTalker/app.py")])
def test_dockerfiles_copy_existing_files_run_as_non_root_and_expose_the_port(name, port, script):
    steps = _dockerfile(name)
    for op, arg in steps:
        if op == "COPY":
            for source in arg.split()[:-1]:
                assert (ROOT / source).exists(), f"{name}: COPY {source} does not exist"
    users = [arg for op, arg in steps if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert [arg for op, arg in steps if op == "EXPOSE"] == [str(port)]
    assert script in [arg for op, arg in steps if op == "CMD"][-1]
    base = [arg for op, arg in steps if op == "FROM"][0]
    assert ("nvidia/cuda" in base) == ("gpu" in name)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and "checkpoints/*" in ignored


def test_front_image_requirements_are_the_project_pins_and_cover_the_fronts_imports():
    """The slim front image installs a subset of requirements.txt; it must hold every package the front imports
    (its own modules and the model library's light modules it uses), and no torch or gradio server."""
    import importlib.metadata as md

    def pins(path: Path) -> dict[str, str]:
        out = {}
        for line in path.read_text().splitlines():
            line = line.split("#")[0].strip()
            if "==" in line:
                name, version = line.split("==")
                out[re.sub(r"[-_.]+", "-", name).lower()] = version
        return out

    front, project = pins(DOCKER / "requirements-front.txt"), pins(ROOT / "requirements.txt")
    assert front and all(project.get(k) == v for k, v in front.items()), (front, project)
    assert "torch" not in front and "gradio" not in front

    sources = list((ROOT / "DemoFront" / "demofront").rglob("*.py"))
    loaded = subprocess.run([sys.executable, "-c", (
        "import sys; sys.path[:0] = ['SadTalker', 'DemoFront'];"
        "import demofront, demofront.api, demofront.pages, demofront.admin, demofront.auth, demofront.health,"
        "demofront.jobs, demofront.worker, demofront.tasks, demofront.webhooks, demofront.tts, demofront.validation,"
        "demofront.streaming, demofront.live, demofront.preview, demofront.examples;"
        "print(sorted(m for m in sys.modules if m.startswith('sadtalker.')))")],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    modules = ast.literal_eval(loaded.stdout.strip().splitlines()[-1])
    assert "sadtalker.options" in modules
    for m in modules:  # a module's file, or a package's __init__.py
        path = ROOT / "SadTalker" / m.replace(".", "/")
        sources.append(path / "__init__.py" if path.is_dir() else path.with_suffix(".py"))
    assert loaded.returncode == 0, loaded.stderr
    top: set[str] = set()
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                top.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                top.add(node.module.split(".")[0])
    third_party = {m for m in top if m not in sys.stdlib_module_names and m not in ("sadtalker", "demofront")}
    distributions = md.packages_distributions()
    needed = {re.sub(r"[-_.]+", "-", distributions[m][0]).lower() for m in third_party if m in distributions}
    assert "torch" not in needed and "gradio" not in needed, needed
    installed = set(front)
    for name in front:  # what pip installs with them (werkzeug comes with flask)
        for requirement in md.requires(name) or []:
            if "extra ==" not in requirement:
                installed.add(re.sub(r"[-_.]+", "-", re.split(r"[\s<>=!~;\[(]", requirement)[0]).lower())
    assert needed <= installed, f"the front imports packages its image lacks: {needed - installed}"


# -- the architecture diagram ---------------------------------------------------------------------------------------

def test_architecture_diagram_is_generated_from_its_source(tmp_path):
    from PIL import Image

    source = (ROOT / "img" / "architecture.dot").read_text()
    for part in ("browser / curl", "Ingress", "DemoFront", "PostgreSQL", "videos volume", "model replica",
                 "nvidia.com/gpu", "checkpoints volume", "download_models.sh", "Redis", "worker", "KEDA",
                 "webhook"):
        assert part in source, part
    with Image.open(ROOT / "img" / "architecture.png") as image:
        assert image.format == "PNG" and image.width > 1000
    assert "img/architecture.dot" in (ROOT / "Makefile").read_text()
    dot = shutil.which("dot")
    if dot is None:
        pytest.skip("Graphviz 'dot' is not installed; the committed PNG was checked, not re-rendered")
    out = tmp_path / "a.png"
    subprocess.run([dot, "-Tpng", "-Gdpi=110", str(ROOT / "img" / "architecture.dot"), "-o", str(out)], check=True,
                   timeout=60)
    with Image.open(out) as fresh, Image.open(ROOT / "img" / "architecture.png") as committed:
        assert fresh.size == committed.size  # the committed picture is the current source's


def test_download_models_script_fetches_every_file_once(tmp_path):
    """The download Job's script, against a local mirror: all eight official files land, a rerun keeps them."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    names = ["SadTalker_V0.0.2_256.safetensors", "SadTalker_V0.0.2_512.safetensors", "mapping_00229-model.pth.tar",
             "mapping_00109-model.pth.tar", "alignment_WFLW_4HG.pth", "detection_Resnet50_Final.pth",
             "GFPGANv1.4.pth", "parsing_parsenet.pth"]
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in names:
        (mirror / name).write_bytes(name.encode())
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "SADTALKER_DOWNLOAD_BASE": mirror.as_uri(),
           "SADTALKER_CHECKPOINTS": str(tmp_path / "ckpt"), "SADTALKER_GFPGAN_WEIGHTS": str(tmp_path / "gfpgan")}
    for _ in range(2):
        result = subprocess.run(["bash", str(ROOT / "scripts" / "download_models.sh")], env=env, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr
    got = {p.name: p.read_bytes() for p in tmp_path.glob("*/*") if p.parent.name in ("ckpt", "gfpgan")}
    assert got == {name: name.encode() for name in names}
    assert result.stderr.count("present: ") == 8  # the second run downloaded nothing
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == set(names[:4])
