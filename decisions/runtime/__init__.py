"""The runtime: state, the rules engine host, actions, the archive, Kafka and the worker."""
