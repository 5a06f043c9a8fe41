from aiokafka.protocol.api import Request

# Strings are None in a filter for "any" (the upstream annotations say str).
class DescribeAclsRequest(Request):
    def __init__(
        self,
        resource_type: int,
        resource_name: str | None,
        resource_pattern_type_filter: int,
        principal: str | None,
        host: str | None,
        operation: int,
        permission_type: int,
    ) -> None: ...

class CreateAclsRequest(Request):
    def __init__(
        self,
        resource_type: int,
        resource_name: str,
        resource_pattern_type_filter: int,
        principal: str,
        host: str,
        operation: int,
        permission_type: int,
    ) -> None: ...
