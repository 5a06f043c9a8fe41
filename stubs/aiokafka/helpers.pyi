from os import PathLike
from ssl import SSLContext

def create_ssl_context(
    *,
    cafile: str | PathLike[str] | None = None,
    capath: str | PathLike[str] | None = None,
    cadata: str | bytes | None = None,
    certfile: str | PathLike[str] | None = None,
    keyfile: str | PathLike[str] | None = None,
    password: str | bytes | None = None,
) -> SSLContext: ...
