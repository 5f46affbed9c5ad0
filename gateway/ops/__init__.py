"""Operations: the metrics exposition listener and the gauges it reads, readiness, the usage
totals over all accounts, and the Cognito set-up probe of `check-config --probe`."""
