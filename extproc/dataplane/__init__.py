"""The data path: the ext_proc shell (streams, effects), the exchange and the attempt as
state machines, the response readers, and the Envoy boundary (the only protobuf here)."""
