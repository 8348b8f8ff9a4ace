"""The sidecar injector: a Kubernetes mutating admission webhook (`extproc inject`).

Pods labelled `extproc.io/inject: "true"` get the service and Envoy as sidecars, the
config and socket volumes, and the environment that points OpenAI and Anthropic SDKs at
the local Envoy. Everything here except `serve` is pure: an AdmissionReview (v1) in, an
AdmissionReview answer out, so tests run it on fixtures.

Per-pod annotations: `extproc.io/config` (the ConfigMap with config.yaml, in the pod's
namespace) and `extproc.io/secret` (the Secret whose keys become the service's
environment: the provider credentials). `extproc.io/status` marks an injected pod; a pod
carrying it is never patched again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml

_VERSION = version("extproc")


INJECT_LABEL = "extproc.io/inject"
STATUS_ANNOTATION = "extproc.io/status"
CONFIG_ANNOTATION = "extproc.io/config"
SECRET_ANNOTATION = "extproc.io/secret"

SERVICE_CONTAINER = "extproc"
ENVOY_CONTAINER = "extproc-envoy"
CONFIG_VOLUME = "extproc-config"
RUN_VOLUME = "extproc-run"
CONFIG_DIR = "/etc/extproc"
RUN_DIR = "/var/run/extproc"
CONFIG_FILE = f"{CONFIG_DIR}/config.yaml"

_REVIEW_API = "admission.k8s.io/v1"
# Wherever an app container reads these, its SDK calls the local Envoy.
_OPENAI_BASE_URL = "OPENAI_BASE_URL"
_ANTHROPIC_BASE_URL = "ANTHROPIC_BASE_URL"

_RESTRICTED: dict[str, Any] = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


class InjectorConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Ports:
    listener: int = 10000
    readiness: int = 10001
    health: int = 10002
    metrics: int = 9464


@dataclass(frozen=True)
class InjectorConfig:
    """What the injector adds; the chart writes it next to the sidecar's config.yaml, whose
    addresses use the same ports."""

    namespace: str
    image: str
    image_pull_policy: str = "IfNotPresent"
    native_sidecars: bool = True
    config_map: str = "extproc-sidecar"
    secret: str = ""
    ports: Ports = field(default_factory=Ports)
    envoy_log_level: str = "warning"
    service_resources: dict[str, Any] = field(default_factory=dict)
    envoy_resources: dict[str, Any] = field(default_factory=dict)
    security_context: dict[str, Any] = field(default_factory=lambda: dict(_RESTRICTED))

    @classmethod
    def from_dict(cls, data: Any) -> InjectorConfig:
        if not isinstance(data, dict):
            raise InjectorConfigError("the injector config must be a mapping")
        known = {
            "namespace",
            "image",
            "imagePullPolicy",
            "nativeSidecars",
            "configMap",
            "secret",
            "ports",
            "envoyLogLevel",
            "resources",
            "securityContext",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise InjectorConfigError(f"unknown injector config keys: {', '.join(unknown)}")
        for required in ("namespace", "image"):
            if not isinstance(data.get(required), str) or not data[required]:
                raise InjectorConfigError(f"{required}: a non-empty string is required")
        ports = data.get("ports") or {}
        if not isinstance(ports, dict) or set(ports) - set(Ports.__dataclass_fields__):
            raise InjectorConfigError("ports: only listener, readiness, health, metrics")
        for name, value in ports.items():
            if not isinstance(value, int) or not 0 < value < 65536:
                raise InjectorConfigError(f"ports.{name}: expected a port number")
        resources = data.get("resources") or {}
        if not isinstance(resources, dict) or set(resources) - {"service", "envoy"}:
            raise InjectorConfigError("resources: only service and envoy")
        return cls(
            namespace=data["namespace"],
            image=data["image"],
            image_pull_policy=str(data.get("imagePullPolicy", "IfNotPresent")),
            native_sidecars=bool(data.get("nativeSidecars", True)),
            config_map=str(data.get("configMap") or "extproc-sidecar"),
            secret=str(data.get("secret") or ""),
            ports=Ports(**ports),
            envoy_log_level=str(data.get("envoyLogLevel", "warning")),
            service_resources=dict(resources.get("service") or {}),
            envoy_resources=dict(resources.get("envoy") or {}),
            security_context=dict(data.get("securityContext") or _RESTRICTED),
        )

    @classmethod
    def load(cls, path: Path) -> InjectorConfig:
        return cls.from_dict(yaml.safe_load(path.read_text()))


# -- the patch ---------------------------------------------------------------------------


def _pointer(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def sidecars(config: InjectorConfig, secret: str) -> list[dict[str, Any]]:
    """The service container, then Envoy's (the start order native sidecars follow)."""
    ports = config.ports
    mounts = [
        {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": RUN_VOLUME, "mountPath": RUN_DIR},
    ]
    grpc_probe = {"grpc": {"port": ports.health}}
    ready_probe = {"httpGet": {"path": "/ready", "port": ports.readiness}}
    service: dict[str, Any] = {
        "name": SERVICE_CONTAINER,
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "args": ["serve", CONFIG_FILE],
        "ports": [
            {"name": "extproc-metrics", "containerPort": ports.metrics, "protocol": "TCP"},
            {"name": "extproc-health", "containerPort": ports.health, "protocol": "TCP"},
        ],
        # The tokenizer tables load before the service reports SERVING (about 1.5 s).
        "startupProbe": {**grpc_probe, "periodSeconds": 1, "failureThreshold": 120},
        "readinessProbe": {**grpc_probe, "periodSeconds": 5},
        "livenessProbe": {**grpc_probe, "periodSeconds": 10, "failureThreshold": 3},
        "resources": config.service_resources,
        "securityContext": config.security_context,
        "volumeMounts": mounts,
    }
    if secret:
        service["envFrom"] = [{"secretRef": {"name": secret}}]
    envoy: dict[str, Any] = {
        "name": ENVOY_CONTAINER,
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "args": ["envoy", CONFIG_FILE, "--workdir", RUN_DIR, "--", "-l", config.envoy_log_level],
        "ports": [
            {"name": "extproc-ready", "containerPort": ports.readiness, "protocol": "TCP"},
        ],
        "startupProbe": {**ready_probe, "periodSeconds": 1, "failureThreshold": 60},
        "readinessProbe": {**ready_probe, "periodSeconds": 5},
        "resources": config.envoy_resources,
        "securityContext": config.security_context,
        "volumeMounts": mounts,
    }
    if config.native_sidecars:
        service["restartPolicy"] = "Always"
        envoy["restartPolicy"] = "Always"
    else:
        # Ordinary containers start in order without waiting for each other; this hook
        # holds the app containers back until Envoy answers.
        ready = f"http://127.0.0.1:{ports.readiness}/ready"
        envoy["lifecycle"] = {"postStart": {"exec": {"command": ["extproc", "probe", ready]}}}
    return [service, envoy]


def _with_gateway_env(container: dict[str, Any], listener_port: int) -> dict[str, Any]:
    ours = {
        _OPENAI_BASE_URL: f"http://127.0.0.1:{listener_port}/v1",
        _ANTHROPIC_BASE_URL: f"http://127.0.0.1:{listener_port}",
    }
    env = [e for e in container.get("env") or () if e.get("name") not in ours]
    env += [{"name": name, "value": value} for name, value in ours.items()]
    return {**container, "env": env}


def patch_for(pod: dict[str, Any], config: InjectorConfig) -> tuple[list[dict[str, Any]], str]:
    """The JSON patch that injects the sidecars (empty when there is nothing to do) and why."""
    metadata = pod.get("metadata") or {}
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    if str(labels.get(INJECT_LABEL, "")).lower() != "true":
        return [], f"not labelled {INJECT_LABEL}=true"
    if STATUS_ANNOTATION in annotations:
        return [], "already injected"
    spec = pod.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("containers"), list):
        raise ValueError("the pod has no spec.containers")
    containers: list[dict[str, Any]] = spec["containers"]
    inits: list[dict[str, Any]] = spec.get("initContainers") or []
    volumes: list[dict[str, Any]] = spec.get("volumes") or []
    taken = {c.get("name") for c in [*containers, *inits]}
    for name in (SERVICE_CONTAINER, ENVOY_CONTAINER):
        if name in taken:
            return [], f"the pod already has a container named {name}"
    for name in (CONFIG_VOLUME, RUN_VOLUME):
        if name in {v.get("name") for v in volumes}:
            return [], f"the pod already has a volume named {name}"

    config_map = str(annotations.get(CONFIG_ANNOTATION) or config.config_map)
    secret = str(annotations.get(SECRET_ANNOTATION, config.secret))
    added = sidecars(config, secret)
    port = config.ports.listener
    apps = [_with_gateway_env(c, port) for c in containers]
    ops: list[dict[str, Any]] = []

    def put(path: str, value: Any, exists: bool) -> None:
        ops.append({"op": "replace" if exists else "add", "path": path, "value": value})

    if config.native_sidecars:
        # App init containers start after the sidecars are up, so they may call them too.
        put(
            "/spec/initContainers",
            added + [_with_gateway_env(c, port) for c in inits],
            "initContainers" in spec,
        )
        put("/spec/containers", apps, True)
    else:
        put("/spec/containers", added + apps, True)
    put(
        "/spec/volumes",
        [
            *volumes,
            {"name": CONFIG_VOLUME, "configMap": {"name": config_map}},
            {"name": RUN_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
        ],
        "volumes" in spec,
    )
    status = json.dumps(
        {
            "version": _VERSION,
            "containers": [c["name"] for c in added],
            "native": config.native_sidecars,
            "config": config_map,
        },
        separators=(",", ":"),
    )
    if "annotations" in metadata:
        put(f"/metadata/annotations/{_pointer(STATUS_ANNOTATION)}", status, False)
    else:
        put("/metadata/annotations", {STATUS_ANNOTATION: status}, False)
    return ops, "injected"


# -- the review --------------------------------------------------------------------------


def _answer(uid: str, response: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": _REVIEW_API,
        "kind": "AdmissionReview",
        "response": {"uid": uid, **response},
    }


def _refusal(uid: str, message: str) -> dict[str, Any]:
    return _answer(
        uid, {"allowed": False, "status": {"code": 400, "message": f"extproc injector: {message}"}}
    )


def review(body: bytes, config: InjectorConfig) -> tuple[dict[str, Any], str]:
    """Answer one AdmissionReview; returns the answer and a word for the log."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _refusal("", "the request body is not JSON"), "refused"
    if not isinstance(document, dict):
        return _refusal("", "expected an AdmissionReview object"), "refused"
    request = document.get("request")
    uid = request.get("uid") if isinstance(request, dict) else None
    if not isinstance(uid, str) or not uid:
        return _refusal("", "expected an AdmissionReview with request.uid"), "refused"
    if document.get("apiVersion") != _REVIEW_API or document.get("kind") != "AdmissionReview":
        return _refusal(uid, f"expected kind AdmissionReview in {_REVIEW_API}"), "refused"
    assert isinstance(request, dict)
    kind = request.get("kind") or {}
    if not isinstance(kind, dict) or kind.get("kind") != "Pod" or request.get("subResource"):
        return _answer(uid, {"allowed": True}), "not a pod"
    if request.get("operation") != "CREATE":
        return _answer(uid, {"allowed": True}), "not a creation"
    if request.get("namespace") == config.namespace:
        return _answer(uid, {"allowed": True}), "own namespace"
    pod = request.get("object")
    if not isinstance(pod, dict):
        return _refusal(uid, "request.object is not a pod"), "refused"
    try:
        ops, why = patch_for(pod, config)
    except (ValueError, TypeError, AttributeError) as error:
        return _refusal(uid, f"cannot inject this pod: {error}"), "refused"
    if not ops:
        answer: dict[str, Any] = {"allowed": True}
        if why.startswith("the pod already has"):
            answer["warnings"] = [f"extproc sidecar not injected: {why}"]
        return _answer(uid, answer), why
    patch = base64.b64encode(json.dumps(ops, separators=(",", ":")).encode()).decode()
    return _answer(uid, {"allowed": True, "patchType": "JSONPatch", "patch": patch}), why


# -- the HTTPS server --------------------------------------------------------------------


class _Certificate:
    """The serving certificate, reloaded when its files change (cert-manager renews)."""

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file, self.key_file = cert_file, key_file
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.stamp = self._stamp()
        self.context.load_cert_chain(cert_file, key_file)

    def _stamp(self) -> tuple[float, float]:
        return (self.cert_file.stat().st_mtime, self.key_file.stat().st_mtime)

    def refresh(self) -> bool:
        with contextlib.suppress(OSError):
            stamp = self._stamp()
            if stamp != self.stamp:
                # New handshakes use the new pair; a half-written pair fails and is retried.
                self.context.load_cert_chain(self.cert_file, self.key_file)
                self.stamp = stamp
                return True
        return False


def serve(config: InjectorConfig, *, host: str, port: int, cert_file: Path, key_file: Path) -> None:
    import structlog
    from aiohttp import web

    from extproc.telemetry import logging

    logging.configure()
    log = structlog.get_logger("extproc.inject")
    certificate = _Certificate(cert_file, key_file)

    async def inject(request: web.Request) -> web.Response:
        answer, outcome = review(await request.read(), config)
        reply = answer["response"]
        log.info(
            "admission review",
            uid=reply["uid"],
            outcome=outcome,
            allowed=reply["allowed"],
            patched="patch" in reply,
        )
        return web.json_response(answer)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def watch_certificate(_: web.Application) -> Any:
        async def loop() -> None:
            while True:
                await asyncio.sleep(30)
                if certificate.refresh():
                    log.info("serving certificate reloaded")

        task = asyncio.create_task(loop())
        yield
        task.cancel()

    # Pods are small; the API server caps objects at about 1.5 MB.
    app = web.Application(client_max_size=3 * 1024 * 1024)
    app.router.add_post("/inject", inject)
    app.router.add_get("/healthz", healthz)
    app.cleanup_ctx.append(watch_certificate)
    log.info("injector serving", address=f"{host}:{port}", namespace=config.namespace)
    web.run_app(
        app, host=host, port=port, ssl_context=certificate.context, print=None, access_log=None
    )
