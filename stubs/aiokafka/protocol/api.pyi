from typing import Any

class Request:
    """Builds the request struct of whichever version the broker speaks."""

    API_KEY: int

class Response:
    # A decoded protocol struct: its fields are those of the response's schema version.
    API_KEY: int
    API_VERSION: int
    def to_object(self) -> dict[str, Any]: ...
    def __getattr__(self, name: str) -> Any: ...
