"""The control channel between instances and the CLI: its envelopes (v1, pure), batches
(v2, pure), the JSON codec, request/reply over Redis pub/sub (``rpc``: the reply inbox)
and one message to many robots (``fanout``). docs/protocol.md is the specification."""
