import abc

from aiokafka.structs import TopicPartition

class ConsumerRebalanceListener(abc.ABC):
    # aiokafka awaits these when they are coroutine functions.
    @abc.abstractmethod
    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> object: ...
    @abc.abstractmethod
    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> object: ...
