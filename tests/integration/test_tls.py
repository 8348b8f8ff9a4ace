"""TLS through a real Envoy: listener TLS with mTLS identities, and TLS origination to providers."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import httpx
import openai
import pytest
import trustme

from tests.helpers import issue_certificate
from tests.integration.conftest import Gateway, start_gateway

APP_ID = "spiffe://test/ns/app/sa/client"
OTHER_ID = "spiffe://test/ns/other/sa/x"
HELLO = [{"role": "user", "content": "over TLS"}]

CONFIG = """
listener:
  port: {port}
  tls: {{cert_file: listener.pem, key_file: listener.key, client_ca_file: client-ca.pem}}
admin: {{port: {admin_port}}}
service: {{grpc_address: "127.0.0.1:{grpc_port}", metrics_address: "127.0.0.1:{metrics_port}"}}
backends:
  - name: secure
    url: https://localhost:{mock_port}/v1
    tls: {{ca_file: backend-ca.pem}}
    credential: {{env: IT_OPENAI_KEY}}
  - name: wrong-ca
    url: https://localhost:{mock_port}/v1
    tls: {{ca_file: wrong-ca.pem}}
  - name: wrong-name
    url: https://localhost:{mock_port}/v1
    tls: {{ca_file: backend-ca.pem, sni: not-the-provider.test}}
models:
  - {{name: secure-model, routes: [{{backend: secure}}]}}
  - {{name: wrong-ca-model, routes: [{{backend: wrong-ca}}]}}
  - {{name: wrong-name-model, routes: [{{backend: wrong-name}}]}}
  - {{name: other-model, routes: [{{backend: secure}}]}}
tenants:
  - {{name: app, spiffe_ids: ["{app_id}"], models: [secure-model, wrong-ca-model, wrong-name-model]}}
  - {{name: other, spiffe_ids: ["{other_id}"], models: [other-model]}}
"""


@pytest.fixture(scope="module")
def tls_gateway(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Gateway, ssl.SSLContext]]:
    workdir = tmp_path_factory.mktemp("tls")
    listener_ca, client_ca, backend_ca, wrong_ca = (trustme.CA() for _ in range(4))
    leaf = listener_ca.issue_cert("127.0.0.1", "localhost")
    leaf.cert_chain_pems[0].write_to_path(workdir / "listener.pem")
    leaf.private_key_pem.write_to_path(workdir / "listener.key")
    client_ca.cert_pem.write_to_path(workdir / "client-ca.pem")
    backend_ca.cert_pem.write_to_path(workdir / "backend-ca.pem")
    wrong_ca.cert_pem.write_to_path(workdir / "wrong-ca.pem")
    provider = backend_ca.issue_cert("localhost")
    provider.cert_chain_pems[0].write_to_path(workdir / "provider.pem")
    provider.private_key_pem.write_to_path(workdir / "provider.key")
    cert, key = issue_certificate(client_ca, workdir, "client", uris=(APP_ID,))
    context = ssl.create_default_context()
    listener_ca.configure_trust(context)
    context.load_cert_chain(cert, key)
    gateway = start_gateway(
        workdir,
        CONFIG,
        app_id=APP_ID,
        other_id=OTHER_ID,
        scheme="https",
        mock_tls=(str(workdir / "provider.pem"), str(workdir / "provider.key")),
    )
    context.check_hostname = False  # the gateway is reached by IP; its certificate names both
    yield gateway, context
    gateway.stack.stop()


def test_mtls_client_reaches_an_https_provider(tls_gateway: tuple[Gateway, ssl.SSLContext]) -> None:
    gateway, context = tls_gateway
    client = openai.OpenAI(
        base_url=f"{gateway.url}/v1",
        api_key="unused",
        max_retries=0,
        http_client=httpx.Client(verify=context),
    )
    raw = client.chat.completions.with_raw_response.create(model="secure-model", messages=HELLO)
    assert raw.parse().choices[0].message.content == "over TLS"
    assert raw.headers["x-mock-host"] == f"localhost:{gateway.mock_port}"
    log = gateway.wait_for_log(raw.headers["x-request-id"])
    assert '"tenant":"app"' in next(
        line for line in log.splitlines() if raw.headers["x-request-id"] in line
    )


def test_spiffe_tenant_allow_list_and_a_forged_identity_header(
    tls_gateway: tuple[Gateway, ssl.SSLContext],
) -> None:
    gateway, context = tls_gateway
    with httpx.Client(base_url=gateway.url, verify=context) as http:
        denied = http.post("/v1/chat/completions", json={"model": "other-model", "messages": HELLO})
        assert denied.status_code == 403
        # A client cannot claim another identity: Envoy replaces the header with the peer's.
        forged = http.post(
            "/v1/chat/completions",
            json={"model": "other-model", "messages": HELLO},
            headers={"x-forwarded-client-cert": f"By=x;URI={OTHER_ID}"},
        )
        assert forged.status_code == 403


def test_client_without_certificate_is_refused(tls_gateway: tuple[Gateway, ssl.SSLContext]) -> None:
    gateway, _ = tls_gateway
    context = ssl.create_default_context(cafile=str(gateway.stack.workdir / "listener.pem"))
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with httpx.Client(base_url=gateway.url, verify=context) as http, pytest.raises(httpx.HTTPError):
        http.post("/v1/chat/completions", json={"model": "secure-model", "messages": HELLO})


@pytest.mark.parametrize("model", ["wrong-ca-model", "wrong-name-model"])
def test_provider_certificate_is_validated(
    tls_gateway: tuple[Gateway, ssl.SSLContext], model: str
) -> None:
    gateway, context = tls_gateway
    with httpx.Client(base_url=gateway.url, verify=context) as http:
        reply = http.post("/v1/chat/completions", json={"model": model, "messages": HELLO})
    assert reply.status_code == 503
    assert reply.json()["error"]["code"] == "upstream_error"
