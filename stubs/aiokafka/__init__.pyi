# Types for the part of aiokafka 0.14 this project calls (the package ships none). Written from its
# sources; only what the ledger uses is declared, so a call outside it, or one with the wrong
# arguments or a missing await, is a mypy error. Keys and values are bytes: the ledger never
# passes serializers or deserializers.
from aiokafka.abc import ConsumerRebalanceListener as ConsumerRebalanceListener
from aiokafka.consumer import AIOKafkaConsumer as AIOKafkaConsumer
from aiokafka.producer import AIOKafkaProducer as AIOKafkaProducer
from aiokafka.structs import ConsumerRecord as ConsumerRecord
from aiokafka.structs import OffsetAndMetadata as OffsetAndMetadata
from aiokafka.structs import RecordMetadata as RecordMetadata
from aiokafka.structs import TopicPartition as TopicPartition

__version__: str
