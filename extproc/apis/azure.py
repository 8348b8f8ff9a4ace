"""Azure OpenAI's paths, served as the OpenAI endpoints they stand for.

The `AzureOpenAI` SDK calls `/openai/deployments/{deployment}/chat/completions` (also
`/completions` and `/embeddings`) with `?api-version=` and its key in `api-key`, and
`/openai/models` for the listing; Azure's newer v1 API is OpenAI's own below `/openai/v1`.
A deployment is the model name the gateway routes: Azure ignores the body's `model`, and
so does the gateway on these paths.
"""

from __future__ import annotations

from urllib.parse import unquote

PREFIX = "/openai/"
# Azure's version of its API; the gateway's contract with a backend is the backend's own
# (an azure_openai backend's api_version), so the client's is never forwarded.
API_VERSION_PARAM = "api-version"
_DEPLOYMENTS = "/openai/deployments/"
_V1 = "/openai/v1/"
_MODELS = "/openai/models"
# Below a deployment: Azure's endpoints that the gateway serves, and their OpenAI paths.
_DEPLOYMENT_ENDPOINTS = {
    "chat/completions": "/v1/chat/completions",
    "completions": "/v1/completions",
    "embeddings": "/v1/embeddings",
}


def openai_path(path: str) -> tuple[str, str | None] | None:
    """The OpenAI path an Azure OpenAI path stands for and the deployment it names (the
    model); None when the path is none of Azure's that the gateway serves."""
    if path.startswith(_DEPLOYMENTS):
        deployment, _, endpoint = path[len(_DEPLOYMENTS) :].partition("/")
        served = _DEPLOYMENT_ENDPOINTS.get(endpoint)
        if served is None or not deployment:
            return None
        return served, unquote(deployment)
    if path.startswith(_V1):
        endpoint = path[len(_V1) :]
    elif path.startswith(_MODELS):
        endpoint = path[len(PREFIX) :]
    else:
        return None
    if endpoint in _DEPLOYMENT_ENDPOINTS or endpoint == "models" or endpoint.startswith("models/"):
        return "/v1/" + endpoint, None
    return None
