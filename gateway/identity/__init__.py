"""Who the user is: the identity-provider boundary (provider.py), AWS Cognito behind it, an
in-memory fake for tests, and the canonical spelling of a username."""
