"""Client-facing APIs: which paths the gateway serves, and errors in each client's schema.

The definitions live in endpoints.py, which is compiled with the request path (a package's
`__init__` cannot be). Compiled code then reads an enum member such as `Kind.CHAT` from a C
variable; a member of a class defined in an interpreted module is an attribute lookup on
every read, through the hook Python 3.11's EnumType installs with its `__getattr__`.
"""

from extproc.apis.endpoints import (
    ENDPOINTS,
    INPUT_ITEMS,
    METERED,
    MODELS_PREFIX,
    RESPONSES_PREFIX,
    STORED_RESPONSE,
    ApiError,
    Endpoint,
    Kind,
    Schema,
    api_for_path,
)

__all__ = [
    "ENDPOINTS",
    "INPUT_ITEMS",
    "METERED",
    "MODELS_PREFIX",
    "RESPONSES_PREFIX",
    "STORED_RESPONSE",
    "ApiError",
    "Endpoint",
    "Kind",
    "Schema",
    "api_for_path",
]
