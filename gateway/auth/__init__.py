"""Who may sync: login, admission, revalidation, the credential cache and the login limiter."""
