"""Azure Blob Storage: credentials from the environment, and clear errors that never show them.

Beam's Azure filesystem (``azfs://account/container/path``, the ``apache-beam[azure]`` extra)
authenticates with, in order:

1. a connection string: Beam's ``--azure_connection_string`` option or the environment
   variable ``AZURE_STORAGE_CONNECTION_STRING`` (an account key or a SAS inside);
2. otherwise Azure AD (``DefaultAzureCredential``: managed identity, ``az login``, service
   principal variables) against ``--blob_service_endpoint https://ACCOUNT.blob.core.windows.net``.

``use_environment_credentials`` adds the variables the Azure CLI uses: with
``AZURE_STORAGE_ACCOUNT`` and ``AZURE_STORAGE_KEY`` (or ``AZURE_STORAGE_SAS_TOKEN``) it builds
the connection string for Beam, in this process's environment only (never in pipeline
options, which runners show and store). ``AZURE_STORAGE_BLOB_ENDPOINT`` points it elsewhere
than ``https://ACCOUNT.blob.core.windows.net`` (Azurite: ``http://127.0.0.1:10000/devstoreaccount1``).

``check_access`` lists a path before the job starts and turns a storage failure into one
sentence (authentication failed, no such container, endpoint unreachable, no credentials) with
every secret value removed (``redact``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from urllib.parse import unquote

from transforms.io.paths import is_blob

CONNECTION_STRING = "AZURE_STORAGE_CONNECTION_STRING"
ACCOUNT = "AZURE_STORAGE_ACCOUNT"
KEY = "AZURE_STORAGE_KEY"
SAS_TOKEN = "AZURE_STORAGE_SAS_TOKEN"
BLOB_ENDPOINT = "AZURE_STORAGE_BLOB_ENDPOINT"

_CREDENTIAL_HELP = (
    f"set {CONNECTION_STRING}, or {ACCOUNT} with {KEY} or {SAS_TOKEN} "
    f"(and {BLOB_ENDPOINT} for an emulator), or pass --blob_service_endpoint to use Azure AD")


class BlobAccessError(ValueError):
    """A blob path that cannot be used: the message says why and holds no secret."""


def use_environment_credentials() -> None:
    """Builds ``AZURE_STORAGE_CONNECTION_STRING`` from the Azure CLI's variables when it is not set."""
    if os.environ.get(CONNECTION_STRING):
        return
    account = os.environ.get(ACCOUNT)
    key = os.environ.get(KEY)
    sas = os.environ.get(SAS_TOKEN)
    if not account or not (key or sas):
        return
    endpoint = os.environ.get(BLOB_ENDPOINT) or f"https://{account}.blob.core.windows.net"
    protocol = "http" if endpoint.startswith("http:") else "https"
    parts = [f"DefaultEndpointsProtocol={protocol}", f"AccountName={account}"]
    parts.append(f"AccountKey={key}" if key else f"SharedAccessSignature={sas.lstrip('?')}")
    parts.append(f"BlobEndpoint={endpoint}")
    os.environ[CONNECTION_STRING] = ";".join(parts) + ";"


def _secrets() -> Iterator[str]:
    values = [os.environ.get(name) for name in (CONNECTION_STRING, KEY, SAS_TOKEN)]
    for part in os.environ.get(CONNECTION_STRING, "").split(";"):
        name, _, value = part.partition("=")
        if name.strip().lower() in ("accountkey", "sharedaccesssignature"):
            values.append(value.strip())
    for value in filter(None, values):
        yield value
        # A SAS may also appear URL-decoded, or as its signature parameter alone.
        for sig in re.findall(r"(?:^|[?&])sig=([^&;]+)", value):
            yield sig
            yield unquote(sig)


def redact(text: str) -> str:
    """``text`` with every storage secret of the environment replaced by ``***``."""
    for secret in sorted(set(_secrets()), key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def _connection_account() -> str | None:
    for part in os.environ.get(CONNECTION_STRING, "").split(";"):
        name, _, value = part.partition("=")
        if name.strip().lower() == "accountname":
            return value.strip()
    return None


def _has_credentials() -> bool:
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import AzureOptions

    if os.environ.get(CONNECTION_STRING):
        return True
    options = FileSystems._pipeline_options  # what Beam's azfs filesystem will use
    if options is None:
        return False
    azure = options.view_as(AzureOptions)
    return bool(azure.azure_connection_string or azure.blob_service_endpoint)


def check_access(path: str, what: str, *, must_match: bool) -> list:
    """Lists ``path`` (a glob) and returns its files' metadata; a storage failure → ``BlobAccessError``.

    For a local path it is ``FileSystems.match``. For a blob it first checks that credentials
    exist and name the path's account. With ``must_match`` an empty match is an error too.
    """
    from apache_beam.io.filesystems import FileSystems

    if is_blob(path):
        use_environment_credentials()
        if FileSystems._pipeline_options is None:
            # Beam's azfs filesystem needs options even outside a pipeline (a check before the job
            # starts): those of the command line (--azure_connection_string, --blob_service_endpoint).
            from apache_beam.options.pipeline_options import PipelineOptions

            FileSystems.set_options(PipelineOptions())
        if not _has_credentials():
            raise BlobAccessError(f"{what}: no credentials for {path}: {_CREDENTIAL_HELP}")
        account = _connection_account()
        named = path[len("azfs://"):].split("/", 1)[0]
        if account and named != account:
            raise BlobAccessError(
                f"{what}: {path} names the storage account '{named}' but the credentials are for "
                f"'{account}'")
    try:
        matched = FileSystems.match([path])[0].metadata_list
    except Exception as e:  # BeamIOError wrapping the storage SDK's error
        if getattr(_root_cause(e), "code", None) != 404:
            raise BlobAccessError(f"{what}: {explain(e, path)}") from None
        matched = []  # Beam 2.77's azfs `exists` raises for a missing blob instead of saying False
    if must_match and not matched:
        raise BlobAccessError(f"{what}: no file matches '{path}'")
    return matched


def explain(error: BaseException, path: str) -> str:
    """One sentence saying why ``path`` could not be listed, read or written; no secret in it."""
    cause = _root_cause(error)
    name = type(cause).__name__
    text = str(cause)
    code = getattr(cause, "error_code", None) or ""
    if name == "ClientAuthenticationError" or "AuthenticationFailed" in text or "AuthorizationFailure" in text \
            or name == "AzureSigningError":
        message = ("authentication failed: the storage account rejected the credentials; check the "
                   f"account key, SAS token or connection string ({CONNECTION_STRING}, {KEY}, {SAS_TOKEN})")
    elif "ContainerNotFound" in str(code) or "ContainerNotFound" in text:
        container = path[len("azfs://"):].split("/")[1] if is_blob(path) else "?"
        message = f"the container '{container}' does not exist (create it first)"
    elif name in ("ServiceRequestError", "ServiceResponseError") or "Connection refused" in text:
        message = "cannot reach the blob endpoint (is the emulator or the network up?)"
    elif "connection string" in text.lower() or "base64" in text.lower() or "padding" in text.lower():
        message = f"the storage credentials are malformed ({CONNECTION_STRING} / {KEY}): {text}"
    else:
        message = f"{name}: {text.splitlines()[0] if text else ''}"
    return redact(f"cannot access {path}: {message}")


def _root_cause(error: BaseException) -> BaseException:
    """The storage SDK's exception inside Beam's wrappers (``BeamIOError.exception_details``)."""
    seen = set()
    while id(error) not in seen:
        seen.add(id(error))
        details = getattr(error, "exception_details", None)
        if isinstance(details, dict) and details:
            inner = next(iter(details.values()))
            if isinstance(inner, BaseException):
                error = inner
                continue
        inner = error.__cause__ or error.__context__
        if inner is None:
            break
        error = inner
    return error
