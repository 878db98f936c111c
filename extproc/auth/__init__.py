"""Provider credentials: static keys, AWS SigV4 (pure: request, credentials, clock → headers),
GCP service-account OAuth tokens (cached and refreshed before expiry)."""
