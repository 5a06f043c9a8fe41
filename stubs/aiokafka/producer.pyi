import asyncio
from collections.abc import Sequence
from ssl import SSLContext
from typing import Literal

from aiokafka.client import AIOKafkaClient
from aiokafka.structs import RecordMetadata

class AIOKafkaProducer:
    client: AIOKafkaClient
    def __init__(
        self,
        *,
        bootstrap_servers: str | list[str] = ...,
        client_id: str | None = ...,
        metadata_max_age_ms: int = ...,
        request_timeout_ms: int = ...,
        acks: Literal[0, 1, -1, "all"] = ...,
        compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None = ...,
        max_batch_size: int = ...,
        max_request_size: int = ...,
        linger_ms: int = ...,
        retry_backoff_ms: int = ...,
        security_protocol: str = ...,
        ssl_context: SSLContext | None = ...,
        connections_max_idle_ms: int = ...,
        enable_idempotence: bool = ...,
        transactional_id: str | None = ...,
        transaction_timeout_ms: int = ...,
        sasl_mechanism: str = ...,
        sasl_plain_password: str | None = ...,
        sasl_plain_username: str | None = ...,
    ) -> None: ...
    async def start(self) -> None: ...
    async def flush(self) -> None: ...
    async def stop(self) -> None: ...
    async def partitions_for(self, topic: str) -> set[int]: ...
    # send() returns once the record is in a batch; awaiting the future waits for the broker.
    async def send(
        self,
        topic: str,
        value: bytes | None = ...,
        key: bytes | None = ...,
        partition: int | None = ...,
        timestamp_ms: int | None = ...,
        headers: Sequence[tuple[str, bytes]] | None = ...,
    ) -> asyncio.Future[RecordMetadata]: ...
    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = ...,
        key: bytes | None = ...,
        partition: int | None = ...,
        timestamp_ms: int | None = ...,
        headers: Sequence[tuple[str, bytes]] | None = ...,
    ) -> RecordMetadata: ...
