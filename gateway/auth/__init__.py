"""Who the user is: identity providers (Cognito), the credential cache and the login limiter."""
