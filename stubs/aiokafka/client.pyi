from aiokafka.cluster import ClusterMetadata

class AIOKafkaClient:
    cluster: ClusterMetadata
    async def force_metadata_update(self) -> bool: ...
