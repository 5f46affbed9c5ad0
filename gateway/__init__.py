"""Authenticating gateway: AWS Cognito logins in front of stock, unmodified Anki sync servers."""

__version__ = "0.1.0"
