"""`Idempotency-Key` on creating requests (draft-ietf-httpapi-idempotency-key-header)."""
