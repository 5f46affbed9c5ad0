"""Operations: the metrics exposition listener, readiness, account usage and its totals, and
the Cognito set-up probe of `check-config --probe`."""
