"""The monitor's adapters: Kafka records in (faust agents), alerts and breaker states out."""
