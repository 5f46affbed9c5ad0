"""Local mode (`python -m gateway dev`, gateway/cli/dev.py): the whole product on one machine.
Its configuration and start-up box (mode.py), the Cognito stand-in, its pool keeper, its users,
the portal's stand-in directory."""
