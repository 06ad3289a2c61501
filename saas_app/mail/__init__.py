"""Mail: a transactional outbox and the sender that delivers it over SMTP (API-v2 §1)."""
